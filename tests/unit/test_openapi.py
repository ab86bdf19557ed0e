"""The OpenAPI document: made from the endpoint tables and key schemas, complete and loadable."""

import inspect
import re

import schemathesis
from twisted.trial.unittest import SynchronousTestCase

from lxdtx import openapi
from lxdtx.config import container as container_config
from lxdtx.config import server as server_config
from lxdtx.device import TYPES
from lxdtx.network import schema as network_schema
from lxdtx.resources import endpoints

# What a handler reads of its body: `string(body, "name")`, `body.get("x")`, `body["x"]`.
_READS = re.compile(r'(?:string|mapping|string_list|_bool|_flag|_size|_properties)\(\s*body,\s*"([\w.-]+)"'
                    r'|\bbody(?:\.get\(|\[)"([\w.-]+)"')


def _resolve(doc, schema):
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


class DocumentTests(SynchronousTestCase):
    def setUp(self):
        self.doc = openapi.document(endpoints())

    def _body(self, method, path):
        op = self.doc["paths"][path][method.lower()]
        content = op["requestBody"]["content"]
        return _resolve(self.doc, next(iter(content.values()))["schema"])

    def test_every_route_and_method(self):
        """Each (path, method) of the tables is an operation (aliases too), /internal/ ones are not."""
        expected = set()
        for endpoint in endpoints():
            for path in endpoint.paths:
                if not path.startswith("/internal/"):
                    expected |= {(re.sub(r"\{(\w+):\*\}", r"{\1}", path), m.lower()) for m in endpoint.actions}
        found = {(path, method) for path, spec in self.doc["paths"].items() for method in spec}
        self.assertEqual(found, expected)
        self.assertIn(("/1.0/instances/{name}/exec", "post"), found)
        self.assertIn(("/1.0/openapi.json", "get"), found)

    def test_path_parameters(self):
        """Every `{param}` of a path is a required path parameter of its operations."""
        for path, spec in self.doc["paths"].items():
            names = re.findall(r"\{(\w+)\}", path)
            for op in spec.values():
                declared = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
                self.assertEqual(declared, names, path)

    def test_bodies_name_what_handlers_read(self):
        """A handler's body fields (as its source reads them) are all in its table's body."""
        for endpoint in endpoints():
            for method, action in endpoint.actions.items():
                source = inspect.getsource(action.handler)
                read = {a or b for a, b in _READS.findall(source)}
                if "req.json()" not in source and not read:
                    continue
                if endpoint.path.startswith("/internal/") or method in ("GET", "DELETE"):
                    continue
                self.assertIsNotNone(action.body, f"{method} {endpoint.path}")
                declared = set(_resolve(self.doc, action.body).get("properties", {}))
                self.assertLessEqual(read, declared, f"{method} {endpoint.path}")

    def test_config_keys_from_the_schemas(self):
        """Config maps list the keys the daemon validates with; unknown ones are refused."""
        container = _resolve(self.doc, self._body("PUT", "/1.0/containers/{name}")["properties"]["config"])
        self.assertEqual(set(container["properties"]), set(container_config.KEYS))
        self.assertIn(r"^user\..+$", container["patternProperties"])
        self.assertIs(container["additionalProperties"], False)
        server = _resolve(self.doc, self._body("PATCH", "/1.0")["properties"]["config"])
        self.assertEqual(set(server["properties"]), set(server_config.SCHEMA.keys))
        self.assertIn("core.macaroon.endpoint", server["properties"])
        network = _resolve(self.doc, self._body("POST", "/1.0/networks")["properties"]["config"])
        self.assertEqual(set(network["properties"]), set(network_schema.KEYS))
        pool = _resolve(self.doc, self._body("POST", "/1.0/storage-pools")["properties"]["config"])
        self.assertIn("btrfs.mount_options", pool["properties"])

    def test_devices_by_type(self):
        """A device is one of the types, with that type's keys only."""
        devices = _resolve(self.doc, self._body("POST", "/1.0/profiles")["properties"]["devices"])
        kinds = {alt["properties"]["type"]["const"]: alt for alt in devices["additionalProperties"]["anyOf"]}
        self.assertEqual(set(kinds), set(TYPES))
        self.assertIn("listen", kinds["proxy"]["properties"])
        self.assertNotIn("listen", kinds["disk"]["properties"])

    def test_envelopes(self):
        """Answers are the sync, async and error envelopes; downloads are bytes; uploads too."""
        create = self.doc["paths"]["/1.0/containers"]["post"]["responses"]
        self.assertEqual(set(create), {"202", "default"})
        self.assertEqual(create["default"], {"$ref": "#/components/responses/error"})
        error = self.doc["components"]["schemas"]["Error"]
        self.assertEqual(error["required"], ["type", "error", "error_code"])
        export = self.doc["paths"]["/1.0/images/{fingerprint}/export"]["get"]
        self.assertIn("application/octet-stream", self.doc["components"]["responses"]["raw"]["content"])
        self.assertEqual(export["responses"]["200"], {"$ref": "#/components/responses/raw"})
        self.assertEqual(export["security"], [])
        upload = self.doc["paths"]["/1.0/containers/{name}/files"]["post"]["requestBody"]["content"]
        self.assertEqual(list(upload), ["application/octet-stream"])

    def test_loads_in_schemathesis(self):
        """The document is valid OpenAPI 3.1 as a client tool reads it: every operation loads."""
        schema = schemathesis.openapi.from_dict(self.doc)
        results = list(schema.get_all_operations())
        self.assertEqual(len(results), sum(len(spec) for spec in self.doc["paths"].values()))
        for result in results:
            result.ok()
