# -*- test-case-name: tests.unit.test_logsetup -*-
"""Where and how the daemon writes its log: text or JSON lines, a minimum level, stdout or a file.

twistd picks its own observer unless the application carries an `ILogObserver`
component; `LxdtxService` sets one from these options when any is given, so
`twistd lxdtx` and `lxdtx daemon` both honour them. The `logging` events of
`/1.0/events` are not filtered here: as in LXD, they carry every level and the
client (`lxc monitor --loglevel`) picks.
"""

import sys

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    jsonFileLogObserver,
    textFileLogObserver,
)

FORMATS = ("text", "json")
LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}


class LogOptionError(ValueError):
    """A --logformat or --loglevel value that is not one of the choices."""


def check(logformat, loglevel):
    """Raise LogOptionError naming the option whose value is unknown."""
    if logformat not in FORMATS:
        raise LogOptionError(f"--logformat must be one of {', '.join(FORMATS)}, not {logformat!r}")
    if loglevel not in LEVELS:
        raise LogOptionError(f"--loglevel must be one of {', '.join(LEVELS)}, not {loglevel!r}")


def observer(logformat="text", loglevel="info", logfile=None):
    """An ILogObserver writing events at `loglevel` and above as `logformat` to `logfile` (or stdout).

    The file is opened for appending and line-buffered, so logrotate's copytruncate
    rotates it without a signal to the daemon.
    """
    check(logformat, loglevel)
    if logfile:
        stream = open(logfile, "a", buffering=1, encoding="utf-8")
    else:
        stream = sys.stdout
    if logformat == "json":
        # One JSON object per line (no record separator): what journald and log shippers read.
        target = jsonFileLogObserver(stream, recordSeparator="")
    else:
        target = textFileLogObserver(stream)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LEVELS[loglevel])
    return FilteringLogObserver(target, [predicate])
