# -*- test-case-name: tests.integration.test_server -*-
"""`/`, `/1.0` (server info and config) and the daemon's internal endpoints."""

import os
import time

from lxdtx import API_VERSION, SERVER_VERSION, architectures, errors, extensions
from lxdtx.bodies import config, fields
from lxdtx.response import CachedSyncResponse, SyncResponse, dumps, empty, etag_of
from lxdtx.router import Action, Endpoint

_CACHE_SECONDS = 5.0
SERVER = fields(config=config("server"))


# With core.macaroon.endpoint set: LXD 3.x says "macaroons", the `lxc` 5.0 client looks for "candid".
_CANDID_METHODS = ["tls", "macaroons", "candid"]


def _untrusted_info(candid=False):
    return {
        "api_extensions": extensions.advertised(),
        "api_status": "stable",
        "api_version": API_VERSION,
        "auth": "untrusted",
        "public": False,
        "auth_methods": list(_CANDID_METHODS) if candid else ["tls"],
    }


def server_info(daemon):
    """The trusted `GET /1.0` object."""
    uname = os.uname()
    environment = {
        "addresses": daemon.addresses(),
        "architectures": architectures.supported(),
        "certificate": daemon.cert_pem,
        "certificate_fingerprint": daemon.cert_fingerprint,
        "driver": "lxc",
        "driver_version": daemon.liblxc_version,
        "kernel": uname.sysname,
        "kernel_architecture": uname.machine,
        "kernel_version": uname.release,
        "server": "lxd",
        "server_pid": os.getpid(),
        "server_version": SERVER_VERSION,
        "storage": "",
        "storage_version": "",
        "server_clustered": False,
        "server_name": daemon.hostname,
    }
    for source in daemon.environment_sources:
        environment.update(source())
    info = _untrusted_info(candid=bool(daemon.config.get("core.macaroon.endpoint")))
    info.update({"auth": "trusted", "config": daemon.config.render(), "environment": environment})
    return info


class InfoCache:
    """The rendered trusted answer, rebuilt after any state change or every few seconds."""

    def __init__(self, store):
        self.response = None
        self.built = 0.0
        store.watch(self.invalidate)

    def get(self, daemon):
        now = time.monotonic()
        if self.response is None or now - self.built > _CACHE_SECONDS:
            info = server_info(daemon)
            body = {
                "type": "sync", "status": "Success", "status_code": 200,
                "operation": "", "error_code": 0, "error": "", "metadata": info,
            }
            self.response = CachedSyncResponse(dumps(body), etag_of(info["config"]))
            self.built = now
        return self.response

    def invalidate(self, *_):
        self.response = None


async def get_root(req):
    return SyncResponse(["/1.0"])


async def get_server(req):
    answers = req.answers
    if not req.trusted:
        if req.daemon.config.get("core.macaroon.endpoint"):
            return SyncResponse(_untrusted_info(candid=True))
        if answers.untrusted is None:
            answers.untrusted = SyncResponse(_untrusted_info())
        return answers.untrusted
    if req.auth_user is not None:
        # Who logged in is the caller's own: not the shared cached answer.
        info = server_info(req.daemon)
        info["auth_user_method"], info["auth_user_name"] = req.auth_user
        return SyncResponse(info, etag=etag_of(info["config"]))
    if answers.info is None:
        return SyncResponse(server_info(req.daemon), etag=etag_of(req.daemon.config.render()))
    return answers.info.get(req.daemon)


async def _update_server(req, replace):
    body = req.json()
    req.check_etag(req.daemon.config.render())
    if "config" not in body:
        if replace:
            body["config"] = {}
        else:
            return empty()
    await req.daemon.config.update(body["config"], replace=replace)
    if req.answers.info is not None:
        req.answers.info.invalidate()
    req.daemon.events.lifecycle("config-updated", "/1.0")
    return empty()


async def put_server(req):
    return await _update_server(req, replace=True)


async def patch_server(req):
    return await _update_server(req, replace=False)


async def get_ready(req):
    if not req.daemon.ready:
        raise errors.Unavailable("LXD daemon setup in progress")
    return empty()


async def post_init(req):
    from lxdtx.init import auto_init

    await auto_init(req.daemon)
    return empty()


async def put_shutdown(req):
    req.daemon.reactor.callLater(0, req.daemon.request_shutdown)
    return empty()


ENDPOINTS = [
    Endpoint("/", get=Action(get_root, untrusted=True)),
    Endpoint("/1.0", get=Action(get_server, untrusted=True), put=Action(put_server, body=SERVER),
             patch=Action(patch_server, body=SERVER)),
    Endpoint("/internal/ready", get=Action(get_ready, local_only=True)),
    Endpoint("/internal/shutdown", put=Action(put_shutdown, local_only=True)),
    Endpoint("/internal/init", post=Action(post_init, local_only=True)),
]
