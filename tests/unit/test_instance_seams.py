"""Every attribute other modules ask of `Instances` exists on it.

The split of `Instances` (records, updates, lifecycle) moved methods between objects; a
caller left asking for the old place fails only when its path runs (a profile update did).
This reads every `self._i.X` and `instances.X` in lxdtx and checks X is a class attribute
of `Instances` or one its constructor assigns."""

import ast
import pathlib
import re
import unittest

import lxdtx
from lxdtx.instance.lifecycle import Instances

ROOT = pathlib.Path(lxdtx.__file__).parent


def _constructed():
    tree = ast.parse((ROOT / "instance" / "lifecycle.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) \
                and isinstance(node.value, ast.Name) and node.value.id == "self":
            names.add(node.attr)
    return names


class InstancesSeams(unittest.TestCase):
    def test_asked_attributes_exist(self):
        known = _constructed() | set(dir(Instances))
        missing = []
        for path in sorted(ROOT.rglob("*.py")):
            text = path.read_text()
            for attr in set(re.findall(r"self\._i\.(\w+)", text)) | set(re.findall(r"\binstances\.(\w+)", text)):
                if attr not in known:
                    missing.append(f"{path.relative_to(ROOT)}: instances.{attr}")
        self.assertEqual(missing, [])
