"""Storage errors, as API errors with their status codes."""

from lxdtx import errors


class NotSupported(errors.BadRequest):
    """The driver cannot do this."""


class InUse(errors.BadRequest):
    """The pool or volume is in use."""


class CannotBeShrunk(errors.BadRequest):
    """A quota below the current usage."""
