# -*- test-case-name: tests.integration.test_migration -*-
"""The requests that migrate a container between daemons: `POST /1.0/containers/<name>`
(or a snapshot's) with `migration: true` starts the source (lxdtx.migration.source),
`POST /1.0/containers` with `source.type: migration` the sink (lxdtx.migration.sink).
Their fields are read here; the operation they start is the answer."""

from lxdtx import errors
from lxdtx.migration import sink, source
from lxdtx.resources.common import mapping, string, string_list
from lxdtx.response import AsyncResponse


async def start_source(req, name, body, snapshot=None):
    """`migration: true` on a container or a snapshot."""
    # `live` left out means live (the API's legacy default).
    op = await source.start(req.daemon, name, snapshot=snapshot, live_wanted=body.get("live", True) is not False,
                            container_only=bool(body.get("container_only") or body.get("instance_only")),
                            target=body.get("target") or None)
    return AsyncResponse(op)


async def create_sink(req, name, body):
    """`source.type: migration`: pull mode dials `source.operation`, push mode waits to be dialled."""
    source_spec = mapping(body, "source")
    mode = string(source_spec, "mode") or "pull"
    if mode not in ("pull", "push"):
        raise errors.BadRequest(f"Invalid value for \"source.mode\": {mode}")
    params = {"architecture": string(body, "architecture"), "config": mapping(body, "config"),
              "devices": mapping(body, "devices"), "profiles": string_list(body, "profiles", ["default"]),
              "ephemeral": bool(body.get("ephemeral")), "description": string(body, "description")}
    op = await sink.create(req.daemon, name, params, source_spec if mode == "pull" else None,
                           live_wanted=bool(source_spec.get("live")))
    return AsyncResponse(op)
