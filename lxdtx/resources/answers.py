# -*- test-case-name: tests.unit.test_wiring -*-
"""Answers the HTTP layer renders once and serves again: one set per router, built with it."""

import json


class Answers:
    """The untrusted `GET /1.0`, the trusted one (rebuilt on change, see `root.InfoCache`),
    and the OpenAPI document."""

    def __init__(self, info=None):
        self.info = info  # a root.InfoCache, made with the daemon's store (None: not cached)
        self.untrusted = None
        self._openapi = None

    def openapi(self, endpoints):
        """The OpenAPI document's bytes, made on first use: the tables and key schemas it
        comes from do not change while the daemon runs."""
        if self._openapi is None:
            from lxdtx import openapi

            self._openapi = json.dumps(openapi.document(endpoints()), sort_keys=True).encode()
        return self._openapi
