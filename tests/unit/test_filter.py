"""The `filter=` language: comparisons, boolean operators, dotted keys, LXD's matching."""

import pytest

from lxdtx import errors
from lxdtx.filter import compile_filter

C1 = {"name": "web1", "status": "Running", "ephemeral": False,
      "config": {"image.os": "Debian", "user.role": "web"}, "expanded_config": {"limits.cpu": "2"}}
C2 = {"name": "db1", "status": "Stopped", "ephemeral": True,
      "config": {"image.os": "Alpine", "user.role": "db"}, "expanded_config": {}}


def names(text):
    predicate = compile_filter(text)
    return [c["name"] for c in (C1, C2) if predicate(c)]


@pytest.mark.parametrize("text, expected", [
    ("status eq Running", ["web1"]),
    ("status eq running", ["web1"]),  # case-insensitive
    ("name eq web.*", ["web1"]),  # anchored regular expressions
    ("name eq eb1", []),
    ("status ne Running", ["db1"]),
    ("config.image.os eq debian", ["web1"]),  # a config key with dots, whole
    ("expanded_config.limits.cpu eq 2", ["web1"]),
    ("ephemeral eq true", ["db1"]),
    ("status eq Running or config.user.role eq db", ["web1", "db1"]),
    ("status eq Running and config.user.role eq db", []),
    ("not status eq Running", ["db1"]),
    ("(status eq Running or status eq Stopped) and not name eq db1", ["web1"]),
    ("config.missing eq x", []),
    ("name eq 'web1'", ["web1"]),
    ("name eq [", []),  # not a valid expression: compared as text
])
def test_filters(text, expected):
    assert names(text) == expected


def test_empty_is_no_filter():
    assert compile_filter("") is None
    assert compile_filter("   ") is None


@pytest.mark.parametrize("text, message", [
    ("status", "Invalid filter: unexpected end"),
    ("status lt 3", "Invalid filter operator: lt"),
    ("(status eq Running", "Invalid filter: unexpected end"),
    ("status eq Running Stopped", "Invalid filter: unexpected Stopped"),
    ("name eq 'open", "Invalid filter: No closing quotation"),
])
def test_bad_filters_are_400s_naming_the_problem(text, message):
    with pytest.raises(errors.BadRequest) as raised:
        compile_filter(text)
    assert raised.value.message == message
