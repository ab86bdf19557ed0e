# -*- test-case-name: tests.integration.test_names -*-
"""Name rules for what the API lets a client name inside a container: snapshots and backups.

LXD (`instance.ValidName` for snapshots, the backup handlers for backups) refuses
a `/`, a space and `..`; each name also becomes one file or directory name here,
so this refuses what cannot be one or could mean another: empty, `.`, `..`, a
`/`, NUL and other control characters, any whitespace, and more than NAME_MAX
bytes of UTF-8.
"""

import unicodedata

from lxdtx import errors

NAME_MAX = 255


def check(field, kind, name):
    """400 naming `field` unless `name` is a valid snapshot or backup name (`kind` says which)."""
    if not isinstance(name, str):
        raise errors.BadRequest(f'Invalid value for "{field}": {kind} name must be a string')
    problem = _problem(name)
    if problem:
        raise errors.BadRequest(f'Invalid value for "{field}": invalid {kind} name {name!r}: {problem}')


def _problem(name):
    if not name:
        return "must not be empty"
    if name in (".", ".."):
        return "must not be '.' or '..'"
    if "/" in name:
        return "must not contain slashes"
    if any(c.isspace() or unicodedata.category(c) in ("Cc", "Cs") for c in name):
        return "must not contain spaces or control characters"
    if len(name.encode("utf-8")) > NAME_MAX:
        return f"must be at most {NAME_MAX} bytes long"
    return None
