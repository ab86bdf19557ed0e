"""The LXD response envelope: sync, created, async and error shapes; API errors."""

import json

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from lxdtx import errors
from lxdtx.response import (
    AsyncResponse, CachedSyncResponse, ErrorResponse, RawResponse, SyncResponse, created, dumps,
    empty, etag_of,
)

SYNC_KEYS = {"type", "status", "status_code", "operation", "error_code", "error", "metadata"}


def render(response):
    """(code, headers, decoded body) of a response rendered on a DummyRequest."""
    request = DummyRequest([b""])
    body = response.render(request)
    headers = {k.lower(): v[0] for k, v in request.responseHeaders.getAllRawHeaders()}
    return request.responseCode or 200, headers, body


class FakeOperation:
    """What AsyncResponse reads of an operation."""

    url = "/1.0/operations/1234"

    def render(self):
        return {"id": "1234", "status": "Running", "status_code": 103}


class EnvelopeTests(SynchronousTestCase):
    """Each envelope has exactly the keys and status codes of the reference."""

    def test_sync(self):
        """200 with all seven keys, JSON content type, metadata as given."""
        code, headers, body = render(SyncResponse({"a": 1}))
        doc = json.loads(body)
        self.assertEqual(code, 200)
        self.assertEqual(set(doc), SYNC_KEYS)
        self.assertEqual(doc, {"type": "sync", "status": "Success", "status_code": 200, "operation": "",
                               "error_code": 0, "error": "", "metadata": {"a": 1}})
        self.assertEqual(headers[b"content-type"], b"application/json")
        self.assertNotIn(b"etag", headers)

    def test_lone_surrogate(self):
        """Text with a lone surrogate (a file name that is not UTF-8) is sent escaped, still JSON."""
        _, _, body = render(SyncResponse(["caf\udce9", "é"]))
        self.assertEqual(json.loads(body)["metadata"], ["caf\udce9", "é"])

    def test_sync_etag(self):
        """An ETag is sent unquoted when given."""
        _, headers, _ = render(SyncResponse({}, etag="abc"))
        self.assertEqual(headers[b"etag"], b"abc")

    def test_empty(self):
        """The empty sync answer has `{}` metadata."""
        code, _, body = render(empty())
        self.assertEqual(code, 200)
        self.assertEqual(json.loads(body)["metadata"], {})

    def test_created(self):
        """Creation: 201, Location, null metadata."""
        code, headers, body = render(created("/1.0/profiles/p1"))
        doc = json.loads(body)
        self.assertEqual(code, 201)
        self.assertEqual(headers[b"location"], b"/1.0/profiles/p1")
        self.assertEqual(set(doc), SYNC_KEYS)
        self.assertIsNone(doc["metadata"])
        self.assertEqual(doc["type"], "sync")

    def test_async(self):
        """202, Location of the operation, the operation object as metadata."""
        code, headers, body = render(AsyncResponse(FakeOperation()))
        doc = json.loads(body)
        self.assertEqual(code, 202)
        self.assertEqual(headers[b"location"], b"/1.0/operations/1234")
        self.assertEqual(doc, {"type": "async", "status": "Operation created", "status_code": 100,
                               "operation": "/1.0/operations/1234", "error_code": 0, "error": "",
                               "metadata": FakeOperation().render()})

    def test_error(self):
        """Errors carry only type, error and error_code; the HTTP status equals error_code."""
        code, headers, body = render(ErrorResponse(404, "not found"))
        self.assertEqual(code, 404)
        self.assertEqual(json.loads(body), {"type": "error", "error": "not found", "error_code": 404})
        self.assertEqual(headers[b"content-type"], b"application/json")

    def test_cached(self):
        """A pre-rendered body is written as is, with its ETag."""
        code, headers, body = render(CachedSyncResponse(b'{"x":1}', etag="e"))
        self.assertEqual((code, body, headers[b"etag"]), (200, b'{"x":1}', b"e"))

    def test_raw(self):
        """Raw bytes keep their content type and file name."""
        code, headers, body = render(RawResponse(b"log", filename="lxc.log"))
        self.assertEqual(body, b"log")
        self.assertEqual(headers[b"content-type"], b"application/octet-stream")
        self.assertEqual(headers[b"content-disposition"], b"inline;filename=lxc.log")

    def test_compact_utf8(self):
        """JSON is compact and UTF-8, not ASCII-escaped."""
        self.assertEqual(dumps({"a": "é", "b": [1, 2]}), '{"a":"é","b":[1,2]}'.encode("utf-8"))


class ETagTests(SynchronousTestCase):
    """ETags are SHA-256 of the canonical JSON of the writable state."""

    @given(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=6))
    def test_order_independent(self, value):
        """Key order does not change the ETag."""
        reordered = dict(reversed(list(value.items())))
        self.assertEqual(etag_of(value), etag_of(reordered))

    def test_shape(self):
        """64 lower-case hex digits, different for different content."""
        tag = etag_of({"a": "1"})
        self.assertRegex(tag, r"^[0-9a-f]{64}$")
        self.assertNotEqual(tag, etag_of({"a": "2"}))


class ApiErrorTests(SynchronousTestCase):
    """Exceptions map to status codes in one place."""

    def test_codes(self):
        """Each error class has its status and a default message."""
        self.assertEqual((errors.NotFound().code, errors.NotFound().message), (404, "not found"))
        self.assertEqual((errors.Forbidden().code, errors.Forbidden().message), (403, "not authorized"))
        self.assertEqual(errors.BadRequest("x").code, 400)
        self.assertEqual(errors.Conflict().code, 409)
        self.assertEqual(errors.PreconditionFailed("x").code, 412)
        self.assertEqual(errors.BodyTooLarge().code, 413)
        self.assertEqual(errors.NotImplementedYet().code, 501)
        self.assertEqual(errors.ApiError("x", code=418).code, 418)

    def test_to_api_error(self):
        """Domain exceptions keep a meaning; anything else is a 500 with its text."""
        self.assertEqual(errors.to_api_error(FileNotFoundError()).code, 404)
        self.assertEqual(errors.to_api_error(PermissionError()).code, 403)
        self.assertEqual(errors.to_api_error(ValueError("bad")).message, "bad")
        error = errors.to_api_error(RuntimeError("boom"))
        self.assertEqual((error.code, error.message), (500, "boom"))
        self.assertEqual(errors.to_api_error(RuntimeError()).message, "RuntimeError")

    def test_to_api_error_is_clean(self):
        """No errno, host path or Python repr reaches the client: OS errors say what went wrong,
        bugs say only that one happened, undecodable text is a 400."""
        error = errors.to_api_error(OSError(28, "No space left on device", "/var/lib/lxdtx/x"))
        self.assertEqual((error.code, error.message), (500, "No space left on device"))
        self.assertEqual(errors.to_api_error(IsADirectoryError(21, "Is a directory", "/x")).message,
                         "Is a directory")
        self.assertEqual(errors.to_api_error(OSError("not ready")).message, "not ready")
        for bug in (TypeError("unhashable type: 'list'"), KeyError("name"), AttributeError("'NoneType' object"),
                    RecursionError("maximum recursion depth exceeded")):
            self.assertEqual((errors.to_api_error(bug).code, errors.to_api_error(bug).message),
                             (500, "internal error"))
        error = errors.to_api_error(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"))
        self.assertEqual((error.code, error.message), (400, "Invalid value: text that is not valid Unicode"))
