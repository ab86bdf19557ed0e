# -*- test-case-name: tests.unit.test_response -*-
"""API errors: each carries the HTTP status and the message the client shows."""


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


def to_api_error(exc):
    """Turn any exception into an ApiError: domain errors keep their code, others are 500."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return NotFound()
    if isinstance(exc, PermissionError):
        return Forbidden()
    if isinstance(exc, ValueError):
        return BadRequest(str(exc))
    return InternalError(str(exc) or exc.__class__.__name__)
