# -*- test-case-name: tests.unit.test_server_config -*-
"""CORS answers from the `core.https_allowed_*` keys."""


class Cors:
    """Adds Access-Control-* headers to responses as the server config says."""

    def __init__(self, config):
        self._config = config

    def apply(self, request):
        config = self._config.values
        if not config:
            return
        if config.get("core.https_allowed_credentials", "").lower() in ("true", "1", "yes", "on"):
            request.setHeader(b"access-control-allow-credentials", b"true")
        if request.getHeader(b"origin") is None:
            return
        for key, header in (
            ("core.https_allowed_origin", b"access-control-allow-origin"),
            ("core.https_allowed_methods", b"access-control-allow-methods"),
            ("core.https_allowed_headers", b"access-control-allow-headers"),
        ):
            value = config.get(key)
            if value:
                request.setHeader(header, value.encode())
