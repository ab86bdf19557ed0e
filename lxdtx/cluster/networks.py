# -*- test-case-name: tests.integration.test_cluster_members -*-
"""Managed networks of a cluster: one definition, one bridge (with its dnsmasq and
firewall table) on every member (lxdtx.cluster.onall has the document and the making and
removal on all members).

`POST /1.0/networks?target=M` defines the network on M (`Pending`; only
`bridge.external_interfaces` may be given there); `POST /1.0/networks` without target
settles the shared config once (defaults, `auto` subnets chosen here) and has every
member bring up its bridge under an intent whose `network` step tears it down while the
row is not `Created`. `GET ?target=M` shows M's config. A rename is refused in a cluster.
"""

from lxdtx import errors
from lxdtx.cluster import onall
from lxdtx.cluster.onall import CREATED, PENDING, local_config, status
from lxdtx.network import schema
from lxdtx.state import ABSENT, Put

KIND = "network"
NODE_SPECIFIC = ("bridge.external_interfaces",)
CREATE_LOCAL = "/internal/cluster/networks/{}/create-local"
UPDATE_LOCAL = "/internal/cluster/networks/{}/update-local"


def _check_config(config):
    if not isinstance(config, dict) or not all(isinstance(v, str) for v in config.values()):
        raise errors.BadRequest("config must be a map of strings")


async def define(daemon, name, description, config, net_type, target):
    member = daemon.cluster.get(target)
    schema.check_name(name)
    if net_type not in ("", None, "bridge"):
        raise errors.BadRequest("Only 'bridge' type networks can be created")
    _check_config(config)
    onall.check_node_keys(config, NODE_SPECIFIC)
    doc = daemon.store.get(KIND, name)
    if doc is None:
        value = {"description": description or "", "config": {}, "type": "bridge", "status": PENDING,
                 "members": {member.value["id"]: dict(config)}}
        await daemon.store.commit([Put(KIND, name, value, expect=ABSENT)])
        return
    if status(doc.value) != PENDING:
        raise errors.BadRequest("The network already exists")
    await daemon.store.commit([Put(KIND, name, onall.pending_value(doc, member, config, "network"),
                                   expect=doc.revision)])


async def create(daemon, name, description, config, net_type):
    networks = daemon.networks
    doc = daemon.store.get(KIND, name)
    if doc is None:
        raise errors.BadRequest("Network not pending on any node (use --target <node> first)")
    if status(doc.value) == CREATED:
        raise errors.Conflict("The network already exists")
    if net_type not in ("", None, "bridge"):
        raise errors.BadRequest("Only 'bridge' type networks can be created")
    _check_config(config)
    onall.check_shared_keys(config, NODE_SPECIFIC)
    config = schema.creation_defaults(config, schema.host_has_ipv6())
    schema.validate(name, config)
    config = await networks._resolve_addresses(name, config)  # `auto` settled once, for all
    value = dict(doc.value, config=config, description=description or doc.value.get("description", ""))
    await onall.make_on_all(daemon, KIND, name, value, doc.revision, CREATE_LOCAL.format(name),
                            lambda: create_local(daemon, name))


async def create_local(daemon, name, coordinator=None):
    """This member's bridge of a pending network: {"intent", "revision", "config" (our keys)},
    the intent left open for the `coordinator` (lxdtx.cluster.pools.create_local)."""
    networks = daemon.networks
    doc = networks.get(name)
    if status(doc.value) == CREATED and daemon.cluster.member_id in (doc.value.get("members") or {}):
        raise errors.Conflict("The network already exists")
    config = local_config(daemon, doc.value)
    schema.validate(name, config)
    intent = onall.begin_local(daemon, "network.create", name, coordinator)
    await intent.will("network", name=name, config=config)
    try:
        await networks._apply(name, config)
    except Exception as e:
        await onall.resolve(daemon, intent.name)
        if isinstance(e, errors.ApiError):
            raise
        raise errors.InternalError(f"Failed to create network \"{name}\": {errors.describe(e)}") from None
    own = (doc.value.get("members") or {}).get(daemon.cluster.member_id, {})
    return onall.made_local(daemon, intent, own)


async def update_local(daemon, name, shared):
    """Another member changes the network's shared config to `shared` (or back): our
    bridge, dnsmasq and firewall follow, with our own keys over it."""
    networks = daemon.networks
    _check_config(shared)
    doc = networks.get(name)
    own = (doc.value.get("members") or {}).get(daemon.cluster.member_id, {})
    current = local_config(daemon, doc.value)
    wanted = {**shared, **own}
    schema.validate(name, wanted)
    if wanted != current:
        await networks._apply(name, wanted, old_config=current)


async def delete(daemon, name, doc):
    def steps(member_id, config):
        return [{"kind": "network", "args": {"name": name, "config": config}}]

    await onall.remove_on_all(daemon, KIND, doc, steps)
