# -*- test-case-name: tests.unit.test_config -*-
"""A schema maps config keys to their rules; validation, defaults and live-update hooks come from it."""

import re

from lxdtx.config.types import is_any
from lxdtx.errors import BadRequest


class Key:
    """The rules of one config key.

    `live`: may change while the object is running; `hidden`: never shown (shown
    as `true` when set); `apply`: name of the live-update hook the owner runs.
    """

    __slots__ = ("apply", "default", "doc", "hidden", "live", "validate")

    def __init__(self, validate=is_any, default="", *, live=True, hidden=False, apply=None, doc=""):
        self.validate = validate
        self.default = default
        self.live = live
        self.hidden = hidden
        self.apply = apply
        self.doc = doc


class ConfigError(BadRequest, ValueError):
    """One or more keys failed validation; the message names the first key.

    A BadRequest, so the router answers 400 without logging it as a crash.
    """

    def __init__(self, problems):
        self.problems = problems
        _key, message = problems[0]
        text = message
        if len(problems) > 1:
            text += f" (and {len(problems) - 1} more errors)"
        super().__init__(text)


class Schema:
    """Keys by exact name plus patterns (`user.*`, `limits.kernel.*`)."""

    def __init__(self, keys, patterns=(), unknown="Unknown configuration key: {key}"):
        self.keys = dict(keys)
        self.patterns = [(re.compile(p), k) for p, k in patterns]
        self.unknown = unknown

    def lookup(self, key):
        rule = self.keys.get(key)
        if rule is not None:
            return rule
        for pattern, rule in self.patterns:
            if pattern.fullmatch(key):
                return rule
        return None

    def problems(self, config, message="Invalid value for config key '{key}': {reason}"):
        """[(key, message)] for every key that is unknown or has a bad value."""
        found = []
        for key in sorted(config):
            value = config[key]
            rule = self.lookup(key)
            if rule is None:
                found.append((key, self.unknown.format(key=key, value=value)))
                continue
            if not isinstance(value, str):
                found.append((key, f"Invalid value type for '{key}': must be a string"))
                continue
            if value == "":
                continue
            try:
                rule.validate(value)
            except ValueError as e:
                found.append((key, message.format(key=key, value=value, reason=e)))
        return found

    def validate(self, config, message="Invalid value for config key '{key}': {reason}"):
        """Raise ConfigError unless every key is known and valid."""
        found = self.problems(config, message)
        if found:
            raise ConfigError(found)

    def get(self, config, key):
        """The value of `key` in `config`, or its default."""
        value = config.get(key, "")
        if value == "":
            rule = self.lookup(key)
            return rule.default if rule else ""
        return value
