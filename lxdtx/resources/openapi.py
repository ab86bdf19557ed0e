# -*- test-case-name: tests.integration.test_openapi -*-
"""`GET /1.0/openapi.json`: the API's OpenAPI document, for trusted clients."""

from lxdtx.response import RawResponse
from lxdtx.router import Action, Endpoint


async def get_document(req):
    from lxdtx.resources import endpoints

    return RawResponse(req.answers.openapi(endpoints), content_type=b"application/json")


ENDPOINTS = [Endpoint("/1.0/openapi.json", get=Action(get_document, answers="raw"))]
