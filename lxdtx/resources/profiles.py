# -*- test-case-name: tests.integration.test_profiles -*-
"""`/1.0/profiles`."""

from lxdtx import profiles
from lxdtx.bodies import DEVICES, RENAME, STRING, config, fields
from lxdtx.resources.common import mapping, string
from lxdtx.response import SyncResponse, created, empty, etag_of
from lxdtx.router import Action, Endpoint

PROFILE = dict(description=STRING, config=config("profile"), devices=DEVICES)


async def list_profiles(req):
    domain = req.daemon.profiles
    if req.recursion:
        return SyncResponse([domain.render(doc.name, doc.value) for doc in
                             req.daemon.store.list(profiles.KIND)])
    return SyncResponse([f"/1.0/profiles/{name}" for name in domain.names()])


async def create_profile(req):
    body = req.json()
    name = string(body, "name")
    await req.daemon.profiles.create(
        name, string(body, "description"), mapping(body, "config"), mapping(body, "devices"))
    return created(f"/1.0/profiles/{name}")


async def get_profile(req):
    name = req.params["name"]
    doc = req.daemon.profiles.get(name)

    return SyncResponse(req.daemon.profiles.render(name, doc.value), etag=etag_of(profiles.writable(doc.value)))


async def _update(req, replace):
    name = req.params["name"]
    doc = req.daemon.profiles.get(name)
    req.check_etag(profiles.writable(doc.value))
    body = req.json()
    if replace:
        value = {"description": string(body, "description"), "config": mapping(body, "config"),
                 "devices": mapping(body, "devices")}
    else:
        value = dict(doc.value)
        if "description" in body:
            value["description"] = string(body, "description")
        value["config"] = {**doc.value.get("config", {}), **mapping(body, "config")}
        value["devices"] = {**doc.value.get("devices", {}), **mapping(body, "devices")}
    await req.daemon.profiles.update(name, value, doc.revision)
    return empty()


async def put_profile(req):
    return await _update(req, replace=True)


async def patch_profile(req):
    return await _update(req, replace=False)


async def rename_profile(req):
    name = req.params["name"]
    new_name = string(req.json(), "name")
    await req.daemon.profiles.rename(name, new_name)
    return created(f"/1.0/profiles/{new_name}")


async def delete_profile(req):
    await req.daemon.profiles.delete(req.params["name"])
    return empty()


ENDPOINTS = [
    Endpoint("/1.0/profiles", get=list_profiles, post=Action(create_profile, body=fields(name=STRING, **PROFILE))),
    Endpoint("/1.0/profiles/{name}", get=get_profile, put=Action(put_profile, body=fields(**PROFILE)),
             patch=Action(patch_profile, body=fields(**PROFILE)), post=Action(rename_profile, body=RENAME),
             delete=delete_profile),
]
