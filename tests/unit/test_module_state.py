"""No module of lxdtx keeps mutable state of its own: caches, locks, descriptors and
registries live on objects the daemon builds (lxdtx.daemon), so two daemons in one
process (the cluster tests run three) share nothing and a test can build a fresh one.

The rule, checked on the source with ast so that code run only later is seen too:
- no `global` statement (a function rebinding a module's name);
- no module-level name bound to an empty container (`[]`, `{}`, `set()`, `dict()`...,
  only ever useful to be filled later) or to a call that opens or locks something
  (`open`, `os.open`, `Lock`, `ThreadPool`, weak dictionaries);
- no function that mutates a module-level name (`NAME.append(...)`, `NAME[k] = v`);
- no `functools.cache`/`lru_cache` on a module-level function.
Constant tables (`KEYS = {...}` filled in the literal and never changed) are fine.
"""

import ast
import pathlib

from twisted.trial.unittest import SynchronousTestCase

import lxdtx

ROOT = pathlib.Path(lxdtx.__file__).parent

_EMPTY_CALLS = {"dict", "list", "set", "defaultdict", "OrderedDict", "deque", "Counter"}
_STATEFUL_CALLS = {"open", "Lock", "RLock", "Semaphore", "ThreadPool", "WeakKeyDictionary", "WeakValueDictionary",
                   "WeakSet", "socket"}
_MUTATORS = {"append", "extend", "add", "update", "setdefault", "pop", "popitem", "clear", "remove", "discard",
             "insert"}
_CACHES = {"cache", "lru_cache", "cached_property"}

# Declared at import time by `faults.point(...)` lines and never changed after: the list of
# crash points a test walks. Built once per process on purpose.
_ALLOWED = {("faults.py", "POINTS")}


def _call_name(node):
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def _module_names(tree):
    """{name: value node} of the names a module binds at its top level."""
    names = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign):
            targets, value = statement.targets, statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets, value = [statement.target], statement.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                names[target.id] = (statement.lineno, value)
    return names


def _empty(value):
    if isinstance(value, (ast.List, ast.Set, ast.Tuple)):
        return isinstance(value, (ast.List, ast.Set)) and not value.elts
    if isinstance(value, ast.Dict):
        return not value.keys
    return isinstance(value, ast.Call) and _call_name(value) in _EMPTY_CALLS and not value.args and not value.keywords


def findings(path, source):
    """Every breach of the rule in one module's source, as 'path:line: what'."""
    tree = ast.parse(source)
    relative = path.relative_to(ROOT).as_posix()
    found = []
    names = {name: where for name, where in _module_names(tree).items() if (relative, name) not in _ALLOWED}
    for name, (line, value) in names.items():
        if _empty(value):
            found.append(f"{relative}:{line}: module-level {name} is an empty container")
        elif isinstance(value, ast.Call) and _call_name(value) in _STATEFUL_CALLS:
            found.append(f"{relative}:{line}: module-level {name} = {_call_name(value)}(...)")
    for statement in tree.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for decorator in statement.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
                if name in _CACHES:
                    found.append(f"{relative}:{statement.lineno}: {statement.name} cached at module level")
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            found.append(f"{relative}:{node.lineno}: global {', '.join(node.names)}")
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        for inner in ast.walk(node):
            if (isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute)
                    and inner.func.attr in _MUTATORS and isinstance(inner.func.value, ast.Name)
                    and inner.func.value.id in names):
                found.append(f"{relative}:{inner.lineno}: {inner.func.value.id}.{inner.func.attr}() at run time")
            targets = []
            if isinstance(inner, (ast.Assign, ast.Delete)):
                targets = inner.targets
            elif isinstance(inner, (ast.AugAssign, ast.AnnAssign)):
                targets = [inner.target]
            for target in targets:
                for item in target.elts if isinstance(target, ast.Tuple) else [target]:
                    if (isinstance(item, ast.Subscript) and isinstance(item.value, ast.Name)
                            and item.value.id in names):
                        found.append(f"{relative}:{inner.lineno}: {item.value.id}[...] changed at run time")
    return found


class ModuleStateTests(SynchronousTestCase):
    """No module-level mutable state in lxdtx."""

    def test_tree(self):
        """No module of lxdtx breaks the rule."""
        found = []
        for path in sorted(ROOT.rglob("*.py")):
            found.extend(findings(path, path.read_text()))
        self.assertEqual(found, [])

    def _check(self, source):
        return findings(ROOT / "example.py", source)

    def test_catches_a_cache(self):
        """An empty dict filled by a function, a rebinding `global` and a cached function are found."""
        found = self._check(
            "import functools\n"
            "_CACHE = {}\n"
            "_ONE = None\n"
            "def get(k):\n"
            "    _CACHE[k] = 1\n"
            "def one():\n"
            "    global _ONE\n"
            "@functools.cache\n"
            "def made():\n"
            "    pass\n")
        self.assertEqual(sorted(found), [
            "example.py:2: module-level _CACHE is an empty container",
            "example.py:5: _CACHE[...] changed at run time",
            "example.py:7: global _ONE",
            "example.py:9: made cached at module level",
        ])

    def test_catches_descriptors_and_locks(self):
        """An fd opened at import and a lock at module level are found; so is a list grown later."""
        found = self._check(
            "import os, threading\n"
            "FD = os.open('/proc/self/ns/net', os.O_RDONLY)\n"
            "LOCK = threading.Lock()\n"
            "SEEN = ['x']\n"
            "def note(x):\n"
            "    SEEN.append(x)\n")
        self.assertEqual(sorted(found), [
            "example.py:2: module-level FD = open(...)",
            "example.py:3: module-level LOCK = Lock(...)",
            "example.py:6: SEEN.append() at run time",
        ])

    def test_constants_pass(self):
        """Constant tables and compiled patterns are not state."""
        self.assertEqual(self._check(
            "import re\n"
            "KEYS = {'a': 1}\n"
            "WORDS = ['a', 'b']\n"
            "PATTERN = re.compile('x')\n"
            "PARAMS = dict(n=1)\n"
            "def get(k):\n"
            "    local = {}\n"
            "    local[k] = KEYS[k]\n"
            "    return local\n"), [])
