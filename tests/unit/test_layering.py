"""Layering: the domain packages speak no HTTP.

lxdtx.resources, lxdtx.router, lxdtx.response and lxdtx.websocket.handshake (the answer
to an upgrade) are the HTTP side: handlers read the request, call the domain and turn what
it returns into a response. A domain module
importing one of them (at its top or lazily inside a function) would take requests or
return responses, so the source of every domain module is parsed and each import
checked; the packages are also imported whole in a fresh interpreter, to catch an
HTTP module pulled in through another one.
"""

import ast
import json
import os
import pathlib
import subprocess
import sys
import unittest

import lxdtx

ROOT = pathlib.Path(lxdtx.__file__).parent
HTTP = ("lxdtx.resources", "lxdtx.router", "lxdtx.response", "lxdtx.websocket.handshake")
DOMAIN = ("instance", "storage", "network", "image", "config", "device", "state", "migration", "cluster")

_PROBE = """
import importlib, json, pkgutil, sys
pkg = importlib.import_module(sys.argv[1])
for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
    importlib.import_module(info.name)
http = tuple(sys.argv[2:])
print(json.dumps(sorted(m for m in sys.modules if m in http or m.startswith(tuple(h + "." for h in http)))))
"""


def _is_http(name):
    return any(name == h or name.startswith(h + ".") for h in HTTP)


def imported(path, source):
    """Every module name an import statement of `source` names, anywhere in the file
    (module path of a `from x import y`, and `x.y` in case y is a module)."""
    package = ".".join(("lxdtx", *path.relative_to(ROOT).parent.parts))
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base]) if base else ".".join(parent)
            names.append(base)
            names.extend(f"{base}.{alias.name}" for alias in node.names)
    return names


def http_imports(package):
    """'path: module' for each HTTP module a module of `lxdtx.<package>` imports."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in imported(path, path.read_text()):
            if _is_http(name):
                found.append(f"{path.relative_to(ROOT).as_posix()}: {name}")
    return found


def loaded_http(package):
    """The HTTP modules importing `package` and all its submodules loads, in a fresh interpreter."""
    root = str(ROOT.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", _PROBE, package, *HTTP], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


class LayeringTests(unittest.TestCase):
    """No domain package imports the HTTP layer, directly, lazily or through another module."""

    def test_sources(self):
        """No module of a domain package has an import of an HTTP module."""
        for package in DOMAIN:
            with self.subTest(package=package):
                self.assertEqual(http_imports(package), [])

    def test_loaded(self):
        """Importing a whole domain package loads no HTTP module."""
        for package in DOMAIN:
            with self.subTest(package=package):
                self.assertEqual(loaded_http(f"lxdtx.{package}"), [])

    def test_catches_lazy_imports(self):
        """An import inside a function, a relative one and `from lxdtx import response` are all seen."""
        path = ROOT / "instance" / "example.py"
        source = ("def f():\n"
                  "    from lxdtx.response import AsyncResponse\n"
                  "from ..router import Action\n"
                  "from lxdtx import response\n"
                  "import lxdtx.resources.common\n")
        found = sorted(name for name in imported(path, source) if _is_http(name))
        self.assertEqual(found, ["lxdtx.resources.common", "lxdtx.response", "lxdtx.response",
                                 "lxdtx.response.AsyncResponse", "lxdtx.router", "lxdtx.router.Action"])
