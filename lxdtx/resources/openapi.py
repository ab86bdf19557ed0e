# -*- test-case-name: tests.integration.test_openapi -*-
"""`GET /1.0/openapi.json`: the API's OpenAPI document, for trusted clients."""

import json

from lxdtx.response import RawResponse
from lxdtx.router import Action, Endpoint

_BODY: list = []


async def get_document(req):
    # Made once: the tables and key schemas it comes from do not change while the daemon runs.
    if not _BODY:
        from lxdtx import openapi
        from lxdtx.resources import endpoints

        _BODY.append(json.dumps(openapi.document(endpoints()), sort_keys=True).encode())
    return RawResponse(_BODY[0], content_type=b"application/json")


ENDPOINTS = [Endpoint("/1.0/openapi.json", get=Action(get_document, answers="raw"))]
