"""Timestamps as the LXD API writes them: RFC 3339, always with a zone."""

from datetime import UTC, datetime

ZERO_TIME = "0001-01-01T00:00:00Z"
EPOCH = "1970-01-01T00:00:00Z"


def now():
    """The current time, UTC, as an RFC 3339 string."""
    return datetime.now(UTC).isoformat()


def from_timestamp(seconds):
    """A POSIX timestamp as an RFC 3339 string."""
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def parse(text):
    """An RFC 3339 string as an aware datetime (accepts `Z` and nanoseconds)."""
    text = text.strip().replace("Z", "+00:00").replace("z", "+00:00")
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest}"
    return datetime.fromisoformat(text)
