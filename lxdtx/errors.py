# -*- test-case-name: tests.unit.test_response -*-
"""API errors: each carries the HTTP status and the message the client shows."""

import os


class ApiError(Exception):
    """An error that becomes the LXD error envelope."""

    code = 500

    def __init__(self, message=None, code=None):
        if code is not None:
            self.code = code
        self.message = message if message is not None else self.default_message()
        super().__init__(self.message)

    def default_message(self):
        return "internal error"


class BadRequest(ApiError):
    code = 400


class Forbidden(ApiError):
    code = 403

    def default_message(self):
        return "not authorized"


class NotFound(ApiError):
    code = 404

    def default_message(self):
        return "not found"


class Conflict(ApiError):
    code = 409

    def default_message(self):
        return "already exists"


class PreconditionFailed(ApiError):
    code = 412


class BodyTooLarge(ApiError):
    code = 413

    def default_message(self):
        return "request body too large"


class InternalError(ApiError):
    code = 500


class NotImplementedYet(ApiError):
    code = 501

    def default_message(self):
        return "not implemented"


class Unavailable(ApiError):
    code = 503

    def default_message(self):
        return "unavailable"


# Exceptions that only a bug raises: their text is about code, not about the request.
_PROGRAMMING_ERRORS = (AttributeError, LookupError, NameError, TypeError, AssertionError, RecursionError,
                       ArithmeticError, NotImplementedError)


def describe(exc):
    """What a client may read of any exception: no Python repr, `[Errno N]` or host path.

    An OSError says what went wrong (`No space left on device`), not where; an
    exception only a bug raises says only that one happened.
    """
    if isinstance(exc, ApiError):
        return exc.message
    if isinstance(exc, OSError):
        if exc.errno is not None:
            return exc.strerror or os.strerror(exc.errno)
        return str(exc) if len(exc.args) == 1 and isinstance(exc.args[0], str) else exc.__class__.__name__
    if isinstance(exc, UnicodeError):
        return "text that is not valid Unicode"
    if isinstance(exc, _PROGRAMMING_ERRORS):
        return InternalError().message
    return str(exc) or exc.__class__.__name__


def to_api_error(exc):
    """Turn any exception into an ApiError: domain errors keep their code, others are 500.

    The client reads the message: no Python repr, errno or host path ends up in it (the
    traceback is the daemon log's business).
    """
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return NotFound()
    if isinstance(exc, PermissionError):
        return Forbidden()
    if isinstance(exc, UnicodeError):
        return BadRequest(f"Invalid value: {describe(exc)}")
    if isinstance(exc, ValueError):
        return BadRequest(str(exc) or "Invalid value")
    return InternalError(describe(exc))
