# -*- test-case-name: tests.unit.test_migration_messages -*-
"""`fs_progress` of a migration's operation (`migration_progress`): what has crossed the
`fs` websocket so far and how fast, as LXD writes it (`c1: 42.13MB (10.20MB/s)`); the
same for other long operations under their own key (`create_backup_progress` of a
backup, without the name: `42.13MB (10.20MB/s)`)."""

from twisted.internet import task

EVERY = 1.0
_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB")


def size_string(count, precision=2):
    """LXD's byte size string: decimal units, `precision` decimals above bytes."""
    value, unit = float(count), 0
    while value >= 1000 and unit < len(_UNITS) - 1:
        value, unit = value / 1000, unit + 1
    return f"{int(value)}B" if unit == 0 else f"{value:.{precision}f}{_UNITS[unit]}"


class Progress:
    """Samples `count()` every second into the operation's metadata while running."""

    def __init__(self, reactor, op, what, count, key="fs_progress"):
        self.op = op
        self.what = what
        self.key = key
        self.count = count
        self.base = dict(op.metadata or {})
        self._last = (reactor.seconds(), 0)
        self._reactor = reactor
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = reactor

    def __enter__(self):
        self._loop.start(EVERY, now=False)
        return self

    def __exit__(self, *exc):
        if self._loop.running:
            self._loop.stop()
        return False

    def _tick(self):
        now, done = self._reactor.seconds(), self.count()
        then, before = self._last
        self._last = (now, done)
        rate = (done - before) / (now - then) if now > then else 0
        text = f"{size_string(done)} ({size_string(rate)}/s)"
        self.op.update_metadata({**self.base, self.key: f"{self.what}: {text}" if self.what else text})
