# -*- test-case-name: tests.unit.test_journal -*-
"""Deterministic crashes for tests: `LXDTX_CRASH_AT=<point>` in the daemon's environment makes
it SIGKILL itself when an operation reaches that point, so a test can kill it at every step
of a change instead of after a guessed delay. Never set in production.

Points are declared where they are reached (`CREATED = faults.point("container.create.volume")`)
and listed in `POINTS`, so a test can walk every step of an operation.
"""

import os
import signal

POINTS: list["Point"] = []
_AT = os.environ.get("LXDTX_CRASH_AT") or None


class Point:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __call__(self):
        if self.name == _AT:
            os.kill(os.getpid(), signal.SIGKILL)

    def __repr__(self):
        return f"<crash point {self.name}>"


def point(name):
    """Declare a crash point; call the result where the operation reaches it."""
    if any(p.name == name for p in POINTS):
        raise ValueError(f"crash point {name} declared twice")
    found = Point(name)
    POINTS.append(found)
    return found


def points(prefix):
    """The names of the declared points of one operation (`container.create.`), in order."""
    return [p.name for p in POINTS if p.name.startswith(prefix)]
