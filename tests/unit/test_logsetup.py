"""The daemon's log observer: JSON or text lines, the minimum level, the option checks."""

import json
import os
import tempfile

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from lxdtx import logsetup


class LogObserverTests(SynchronousTestCase):
    """Events at or above the chosen level reach the file in the chosen format."""

    def setUp(self):
        fd, self.path = tempfile.mkstemp(prefix="lxdtx-log-", dir="/var/tmp")
        os.close(fd)
        self.addCleanup(os.unlink, self.path)

    def lines(self):
        with open(self.path) as f:
            return [line for line in f.read().splitlines() if line]

    def test_json_lines_at_level(self):
        """--logformat json writes one JSON object a line, keeping the event's fields."""
        observer = logsetup.observer("json", "warn", self.path)
        log = Logger(namespace="lxdtx.test", observer=observer)
        log.info("not {this}", this="kept")
        log.warn("pool {pool} is full", pool="default")
        [line] = self.lines()
        event = json.loads(line)
        self.assertEqual(event["log_format"], "pool {pool} is full")
        self.assertEqual(event["pool"], "default")
        self.assertEqual(event["log_level"]["name"], "warn")
        self.assertEqual(event["log_namespace"], "lxdtx.test")

    def test_text_lines(self):
        """The text format is twistd's: a timestamp, the namespace and the formatted message."""
        observer = logsetup.observer("text", "debug", self.path)
        Logger(namespace="lxdtx.test", observer=observer).debug("hello {who}", who="you")
        [line] = self.lines()
        self.assertIn("[lxdtx.test#debug] hello you", line)

    def test_appends(self):
        """An existing log is appended to, never truncated (logrotate's copytruncate rotates it)."""
        with open(self.path, "w") as f:
            f.write("old\n")
        Logger(observer=logsetup.observer("json", "info", self.path)).info("new")
        self.assertEqual(self.lines()[0], "old")
        self.assertEqual(len(self.lines()), 2)

    def test_bad_choices(self):
        """Unknown formats and levels are refused, naming the option."""
        with self.assertRaisesRegex(logsetup.LogOptionError, "--logformat"):
            logsetup.check("xml", "info")
        with self.assertRaisesRegex(logsetup.LogOptionError, "--loglevel"):
            logsetup.check("json", "chatty")
