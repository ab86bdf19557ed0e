# -*- test-case-name: tests.integration.test_networks -*-
"""`/1.0/networks`: managed networks and host interfaces, and `/leases` (`network`, `network_leases`)."""

from lxdtx import errors
from lxdtx.bodies import RENAME, STRING, config, fields, one_of_strings
from lxdtx.cluster import networks as cluster_networks
from lxdtx.cluster import onall
from lxdtx.network.networks import writable
from lxdtx.resources.common import mapping, string
from lxdtx.response import SyncResponse, created, empty, etag_of
from lxdtx.router import Action, Endpoint

NETWORK = dict(description=STRING, config=config("network"))


async def list_networks(req):
    found = await req.daemon.networks.everything()
    if req.recursion:
        return SyncResponse([obj for _, obj in found])
    return SyncResponse([f"/1.0/networks/{name}" for name, _ in found])


async def create_network(req):
    body = req.json()
    name = string(body, "name")
    if onall.clustered(req.daemon):
        target = req.query.get("target", "")
        args = (req.daemon, name, string(body, "description"), mapping(body, "config"), string(body, "type"))
        if target:
            await cluster_networks.define(*args, target)
        else:
            await cluster_networks.create(*args)
        return created(f"/1.0/networks/{name}")
    await req.daemon.networks.create(name, string(body, "description"), mapping(body, "config"),
                                     string(body, "type"))
    return created(f"/1.0/networks/{name}")


async def get_network(req):
    target = req.query.get("target", "")
    member = req.daemon.cluster.get(target) if target and onall.clustered(req.daemon) else None
    rendered, etag = await req.daemon.networks.lookup(req.params["name"], member)
    return SyncResponse(rendered, etag=etag_of(etag))


def _managed(req):
    name = req.params["name"]
    networks = req.daemon.networks
    if not networks.is_managed(name):
        raise errors.NotFound(f"Network '{name}' not found")
    return name, networks.get(name)


async def _update(req, replace):
    name, doc = _managed(req)
    req.check_etag(writable(name, doc.value))
    body = req.json()
    if replace:
        config = mapping(body, "config")
        description = string(body, "description")
    else:
        config = {**doc.value.get("config", {}), **mapping(body, "config")}
        description = string(body, "description") if "description" in body else None
    await req.daemon.networks.update(name, config, description, doc.revision)
    return empty()


async def put_network(req):
    return await _update(req, replace=True)


async def patch_network(req):
    # The reference's PATCH answers success without changing anything (a bug at this
    # API level); here it merges the given keys, which is what its callers mean.
    return await _update(req, replace=False)


async def rename_network(req):
    name, _ = _managed(req)
    new_name = string(req.json(), "name")
    await req.daemon.networks.rename(name, new_name)
    return created(f"/1.0/networks/{new_name}")


async def delete_network(req):
    name, _ = _managed(req)
    await req.daemon.networks.delete(name)
    return empty()


async def create_local(req):
    """Another member has us bring up our bridge of a pending network (lxdtx.cluster.networks)."""
    await onall.member_body(req)
    coordinator = req.daemon.cluster.peers.caller(req).value["id"]
    return SyncResponse(await cluster_networks.create_local(req.daemon, req.params["name"], coordinator))


async def update_local(req):
    body = await onall.member_body(req)
    await cluster_networks.update_local(req.daemon, req.params["name"], body.get("config"))
    return empty()


async def get_leases(req):
    return SyncResponse(await req.daemon.networks.leases(req.params["name"]))


ENDPOINTS = [
    Endpoint("/1.0/networks", get=list_networks,
             post=Action(create_network, body=fields(name=STRING, type=one_of_strings("bridge"), **NETWORK))),
    Endpoint("/1.0/networks/{name}", get=get_network, put=Action(put_network, body=fields(**NETWORK)),
             patch=Action(patch_network, body=fields(**NETWORK)), post=Action(rename_network, body=RENAME),
             delete=delete_network),
    Endpoint("/1.0/networks/{name}/leases", get=get_leases),
    Endpoint("/internal/cluster/networks/{name}/create-local", post=create_local),
    Endpoint("/internal/cluster/networks/{name}/update-local", post=update_local),
]
