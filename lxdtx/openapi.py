# -*- test-case-name: tests.unit.test_openapi -*-
"""The OpenAPI 3.1 document of the API, made from the endpoint tables and the key schemas.

Paths, methods and path parameters come from the `Endpoint`s (aliases included),
request bodies from each `Action`'s `body` (lxdtx.bodies), whose `config` and
`devices` maps are expanded here from the schemas the daemon validates with.
Answers are the three envelopes of the LXD REST API: sync, async (an operation)
and error. The daemon's `/internal/` endpoints, served only on the unix socket to
its own tools, are left out, as LXD leaves them out of its documents.
"""

import re

from lxdtx import API_VERSION, SERVER_VERSION

_PARAM = re.compile(r"\{(\w+)(:\*)?\}")
_KEYS = "x-lxdtx-keys"
_MEDIA = "x-lxdtx-media-type"
JSON = "application/json"

_STRING = {"type": "string"}


def _key_map(keys, patterns=(), docs=None):
    """A config map of these keys (string values), patterns for the rest, nothing else."""
    docs = docs or {}
    properties = {}
    for key in sorted(keys):
        prop = dict(_STRING)
        if docs.get(key):
            prop["description"] = docs[key]
        properties[key] = prop
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if patterns:
        schema["patternProperties"] = {pattern: dict(_STRING) for pattern in patterns}
    return schema


def _schema_map(schema):
    """A lxdtx.config.schema.Schema as a config map."""
    docs = {key: rule.doc for key, rule in schema.keys.items()}
    return _key_map(schema.keys, [f"^{pattern.pattern}$" for pattern, _ in schema.patterns], docs)


def _server():
    from lxdtx.config import server

    return _schema_map(server.SCHEMA)


def _container():
    from lxdtx.config import container

    return _schema_map(container.SCHEMA)


def _network():
    from lxdtx.network import schema

    return _schema_map(schema.SCHEMA)


def _storage(kind):
    from lxdtx.storage.driver import COMMON_KEYS, COMMON_VOLUME_KEYS
    from lxdtx.storage.load import DRIVERS

    keys = set(COMMON_KEYS if kind == "pool" else COMMON_VOLUME_KEYS)
    for driver in DRIVERS.values():
        keys.update(driver.keys if kind == "pool" else driver.volume_keys)
    return _key_map(keys, [r"^user\..+$"])


def _devices():
    """A map of device names to devices, each of one type and that type's keys."""
    from lxdtx.device import TYPES

    kinds = []
    for kind in sorted(TYPES):
        module = TYPES[kind]
        properties = {"type": {"const": kind}}
        properties.update((key, dict(_STRING)) for key in sorted(getattr(module, "KEYS", {})))
        kinds.append({"type": "object", "properties": properties, "required": ["type"],
                      "additionalProperties": False})
    return {"type": "object", "additionalProperties": {"anyOf": kinds}}


CONFIG_SCHEMAS = {
    "server": _server, "container": _container, "profile": _container, "network": _network,
    "storage-pool": lambda: _storage("pool"), "storage-volume": lambda: _storage("volume"),
    "devices": _devices,
}


def _component(kind):
    return f"keys-{kind}"


def expand(schema, built):
    """`schema` (words of lxdtx.bodies) with every key-schema name a reference to its schema,
    which is added to `built` (component name -> schema) once."""
    if isinstance(schema, list):
        return [expand(item, built) for item in schema]
    if not isinstance(schema, dict):
        return schema
    kind = schema.get(_KEYS)
    if kind is not None:
        name = _component(kind)
        if name not in built:
            built[name] = CONFIG_SCHEMAS[kind]()
        return {"$ref": f"#/components/schemas/{name}"}
    return {key: expand(value, built) for key, value in schema.items() if key != _MEDIA}


# -- the envelopes (/work/shared/reference/rest-api.md, section 3) -----------------------------
_ENVELOPES = {
    "Sync": {
        "type": "object",
        "required": ["type", "status", "status_code", "operation", "error_code", "error", "metadata"],
        "properties": {
            "type": {"const": "sync"}, "status": _STRING, "status_code": {"type": "integer"},
            "operation": _STRING, "error_code": {"type": "integer"}, "error": _STRING, "metadata": {},
        },
    },
    "Async": {
        "type": "object",
        "required": ["type", "status", "status_code", "operation", "metadata"],
        "properties": {
            "type": {"const": "async"}, "status": {"const": "Operation created"},
            "status_code": {"const": 100}, "operation": {"type": "string", "pattern": "^/1\\.0/operations/"},
            "error_code": {"type": "integer"}, "error": _STRING, "metadata": {"$ref": "#/components/schemas/Operation"},
        },
    },
    "Operation": {
        "type": "object",
        "required": ["id", "class", "status", "status_code"],
        "properties": {
            "id": _STRING, "class": {"enum": ["task", "websocket", "token"]}, "description": _STRING,
            "created_at": _STRING, "updated_at": _STRING, "status": _STRING, "status_code": {"type": "integer"},
            "resources": {"type": ["object", "null"]}, "metadata": {"type": ["object", "null"]},
            "may_cancel": {"type": "boolean"}, "err": _STRING,
        },
    },
    "Error": {
        "type": "object",
        "required": ["type", "error", "error_code"],
        "properties": {"type": {"const": "error"}, "error": _STRING, "error_code": {"type": "integer"}},
    },
}


def _envelope(name, description):
    return {"description": description, "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{name}"}}}}


_RESPONSES = {
    "sync": _envelope("Sync", "Done (sync envelope)"),
    "created": _envelope("Sync", "Created or renamed (Location names it)"),
    "async": _envelope("Async", "Started as a background operation (async envelope)"),
    "error": _envelope("Error", "Refused or failed (error envelope; its error_code is the status)"),
    "raw": {"description": "The content, or a sync envelope for a listing",
            "content": {"application/octet-stream": {}, JSON: {"schema": {}}}},
    "partial": {"description": "Part of the content (a Range request)", "content": {"application/octet-stream": {}}},
    "websocket": {"description": "Upgraded to a websocket"},
}


def _responses(method, answers):
    if answers == "raw":
        found = {"200": "raw", "206": "partial"}
    elif answers == "websocket":
        found = {"101": "websocket"}
    elif answers == "async":
        found = {"202": "async"}
    elif answers == "sync" or method == "GET":
        found = {"200": "sync"}
    else:
        found = {"200": "sync", "201": "created", "202": "async"}
    found["default"] = "error"
    return {code: {"$ref": f"#/components/responses/{name}"} for code, name in found.items()}


def _operation(method, path, action, built):
    params = _PARAM.findall(path)
    op = {"operationId": f"{method.lower()} {path}", "responses": _responses(method, action.answers)}
    if params:
        op["parameters"] = [
            {"name": name, "in": "path", "required": True, "schema": dict(_STRING),
             **({"description": "may hold slashes (sent percent-encoded)"} if rest else {})}
            for name, rest in params]
    if action.untrusted:
        op["security"] = []  # open to untrusted clients too
    if action.body is not None:
        media = action.body.get(_MEDIA, JSON)
        op["requestBody"] = {"required": False, "content": {media: {"schema": expand(action.body, built)}}}
    return op


def document(endpoints):
    """The OpenAPI document (a dict) of `endpoints` (lxdtx.resources.endpoints())."""
    paths = {}
    built = {}
    for endpoint in endpoints:
        for path in endpoint.paths:
            if path.startswith("/internal/"):
                continue
            spec = paths.setdefault(_PARAM.sub(r"{\1}", path), {})
            for method, action in endpoint.actions.items():
                spec[method.lower()] = _operation(method, path, action, built)
    return {
        "openapi": "3.1.0",
        "info": {"title": "LXD REST API (lxdtx)", "version": f"{API_VERSION} (server {SERVER_VERSION})"},
        "paths": paths,
        "components": {
            "schemas": {**_ENVELOPES, **dict(sorted(built.items()))},
            "responses": _RESPONSES,
            "securitySchemes": {"tls": {"type": "mutualTLS",
                                        "description": "a client certificate in the trust store"}},
        },
        # Trusted clients only (a trusted certificate, or the unix socket), unless an operation says otherwise.
        "security": [{"tls": []}],
    }
