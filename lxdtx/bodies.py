# -*- test-case-name: tests.unit.test_openapi -*-
"""The words endpoint tables use to say what a request body holds (`Action(body=...)`).

Each is a JSON Schema fragment. `config(kind)` and `DEVICES` only name a key schema
(the server's, a container's, a network's, ...); lxdtx.openapi expands them from the
schemas the daemon validates with, so the keys are listed in one place only.
"""

STRING = {"type": "string"}
BOOLEAN = {"type": "boolean"}
INTEGER = {"type": "integer"}
OBJECT = {"type": "object"}
STRINGS = {"type": "array", "items": STRING}
MAP_OF_STRINGS = {"type": "object", "additionalProperties": STRING}
DEVICES = {"x-lxdtx-keys": "devices"}


def config(kind):
    """The `config` map of an object of `kind` (a key of lxdtx.openapi.CONFIG_SCHEMAS)."""
    return {"x-lxdtx-keys": kind}


def fields(**properties):
    """An object of these fields (none required: the handlers default what is missing)."""
    return {"type": "object", "properties": properties}


def one_of_strings(*choices):
    return {"type": "string", "enum": list(choices)}


# Bodies several tables share.
RENAME = fields(name=STRING)
# A body of raw bytes (a file's content), not JSON.
BYTES = {"type": "string", "format": "binary", "x-lxdtx-media-type": "application/octet-stream"}
