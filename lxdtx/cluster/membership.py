# -*- test-case-name: tests.integration.test_cluster_bootstrap -*-
"""This daemon as a cluster member: becoming the first one, the member list, renames
and removals.

A member is a document of kind `cluster_member` (name -> {id, url, etcd_peer_url,
etcd_client_url}) in the cluster's store; `id` is stable across renames and keys the
member's heartbeat. Being clustered is a local fact, `cluster/member.json` (see
lxdtx.cluster.etcdprocess): its atomic creation is the moment a bootstrap takes effect.

Bootstrap: the cluster certificate and this member's etcd certificate are made, its etcd
starts as a new one-member cluster, every SQLite document is copied into etcd with
commits held back (lxdtx.state.switch), member.json is written, and the daemon carries
on on etcd. The journal records the intent in SQLite first: a daemon killed before
member.json exists starts on SQLite again and the recovery undoes the rest (ends the
etcd left running, removes cluster/). The SQLite file is left as it was, unused.
"""

import os
import shutil
import signal

from twisted.internet import threads
from twisted.logger import Logger

from lxdtx import errors, faults
from lxdtx.asyncutil import sleep
from lxdtx.cluster import pki
from lxdtx.cluster.backend import start_member
from lxdtx.cluster.etcdprocess import EtcdFiles, EtcdMemberSpec, _is_our_etcd, load_spec, save_spec
from lxdtx.config.types import parse_host_port
from lxdtx.state import ABSENT, Delete, Put
from lxdtx.state.etcdgateway import EtcdUnavailable

KIND = "cluster_member"
ETCD_PEER_OFFSET, ETCD_CLIENT_OFFSET = 1, 2  # etcd's ports: core.https_address's port + these
ENABLE_ETCD_STARTED = faults.point("cluster.enable.etcd_started")
ENABLE_COPIED = faults.point("cluster.enable.copied")
ENABLE_TOOK_EFFECT = faults.point("cluster.enable.took_effect")


RECONFIG_ATTEMPTS = 20


async def reconfigure(call, reactor):
    """Run an etcd membership change; etcd refuses one ("unhealthy cluster") until every
    member it has was connected for 5 s, as right after a join or a member's return."""
    for attempt in range(RECONFIG_ATTEMPTS):
        try:
            return await call()
        except EtcdUnavailable as e:
            if "unhealthy cluster" not in e.reason or attempt == RECONFIG_ATTEMPTS - 1:
                raise
            await sleep(1, reactor)


def config_document(member_id):
    """The name of a member's own server config document (kind `config`)."""
    return f"member-{member_id}"


def _check_name(name):
    if not name or len(name) > 63 or name.startswith("-") or not all(c.isalnum() or c in "-_." for c in name):
        raise errors.BadRequest(f"Invalid member name {name!r}: letters, digits, '-', '_' and '.' only")


def _https_url(host, port):
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def member_document(daemon, spec, host, port):
    """A member's document; its server certificate is what the others pin when calling it."""
    with open(daemon.cert_path) as f:
        certificate = f.read()
    return {"id": spec.member_id, "url": _https_url(host, port), "etcd_peer_url": spec.peer_url,
            "etcd_client_url": spec.client_url, "certificate": certificate}


def own_trust(daemon, store, name):
    """Our server certificate in the cluster's trust store (the other members call us showing
    theirs, we call them showing ours), unless it is there already."""
    from lxdtx import tls, trust

    with open(daemon.cert_path) as f:
        pem = f.read()
    fingerprint = tls.fingerprint(tls.pem_to_der(pem))
    if store.exists(trust.KIND, fingerprint):
        return []
    return [Put(trust.KIND, fingerprint, {"name": name, "type": "client", "certificate": pem}, expect=ABSENT)]


class Membership:
    """What the API asks about the cluster, answered from this daemon's store and etcd."""

    log = Logger()

    def __init__(self, daemon):
        self.daemon = daemon
        self.files = EtcdFiles(daemon.dir)
        self._busy = False
        from lxdtx.cluster.peers import Peers

        self.peers = Peers(daemon)

    @property
    def spec(self):
        choice = getattr(self.daemon, "store_choice", None)
        return choice.spec if choice is not None else None

    @property
    def enabled(self):
        return self.spec is not None

    @property
    def name(self):
        """This member's name: its document's (another member may have renamed it), else the
        one it was given."""
        if self.spec is None:
            return ""
        doc = self.member_by_id(self.spec.member_id)
        return doc.name if doc is not None else self.spec.name

    @property
    def member_id(self):
        """This member's stable id ("" when not clustered): containers' `location`."""
        return self.spec.member_id if self.spec is not None else ""

    def environment(self):
        if not self.enabled:
            return {}
        return {"server_clustered": True, "server_name": self.name}

    # -- members ------------------------------------------------------------------------
    def _require_enabled(self):
        if not self.enabled:
            raise errors.BadRequest("This server is not clustered")

    def names(self):
        self._require_enabled()
        return self.daemon.store.names(KIND)

    def get(self, name):
        self._require_enabled()
        doc = self.daemon.store.get(KIND, name)
        if doc is None:
            raise errors.NotFound(f"Cluster member '{name}' not found")
        return doc

    def member_or_none(self, name):
        return self.daemon.store.get(KIND, name) if self.enabled else None

    def member_by_id(self, member_id):
        for doc in self.daemon.store.list(KIND):
            if doc.value.get("id") == member_id:
                return doc
        return None

    def location_name(self, member_id):
        doc = self.member_by_id(member_id) if member_id else None
        return doc.name if doc is not None else "none"

    def online(self, doc):
        return doc.value["id"] == self.member_id or self.daemon.store_choice.liveness.online(doc.value["id"])

    def placement(self, target, pool=None):
        """The member document a new container goes to (lxdtx.cluster.placement): `target`,
        else the least busy online member; only one that has the root disk's `pool` made."""
        from lxdtx.cluster import placement

        self._require_enabled()
        return placement.choose(self, target, pool)

    def render(self, name, value):
        status, message = self.daemon.store_choice.liveness.status(value["id"])
        return {"server_name": name, "url": value["url"], "database": True, "status": status, "message": message}

    async def rename(self, name, new_name):
        doc = self.get(name)
        _check_name(new_name)
        if self.daemon.store.exists(KIND, new_name):
            raise errors.BadRequest(f"The cluster already has a member named '{new_name}'")
        await self.daemon.store.commit([Delete(KIND, name, expect=doc.revision),
                                        Put(KIND, new_name, doc.value, expect=ABSENT)])
        if doc.value["id"] == self.spec.member_id:
            spec = self.spec
            spec.name = new_name
            await threads.deferToThread(save_spec, self.files, spec)

    async def delete(self, name, force=False):
        doc = self.get(name)
        if doc.value["id"] == self.spec.member_id:
            raise errors.BadRequest("A member can't remove itself from the cluster: remove it from another member")
        if not force and self.daemon.store_choice.liveness.online(doc.value["id"]):
            raise errors.BadRequest(f"Cluster member '{name}' is online: stop it first, or remove it with force")
        held = [c for c in self.daemon.store.list("container") if c.value.get("location") == doc.value["id"]]
        if held and not force:
            raise errors.BadRequest(f"Cluster member '{name}' still has the following containers: "
                                    f"{', '.join(c.name for c in held)}")
        gateway = self.daemon.store.backend.gateway
        for member in await gateway.member_list():
            if doc.value["etcd_peer_url"] in member.get("peerURLs", ()):
                await reconfigure(lambda member=member: gateway.member_remove(member["ID"]), self.daemon.reactor)
        # Forced: what lived only on it goes with it (its containers, its part of each pool).
        changes = [Delete(KIND, name, expect=doc.revision)]
        store = self.daemon.store
        for container in held:
            snapshots = [s for s in store.list("snapshot") if s.name.startswith(container.name + "/")]
            changes.append(Delete("container", container.name, expect=container.revision))
            changes += [Delete("snapshot", s.name, expect=s.revision) for s in snapshots]
            for volume in [container.name] + [s.name for s in snapshots]:
                key = f"{container.value.get('pool')}/container/{volume}"
                if store.exists("volume", key):
                    changes.append(Delete("volume", key))
        # Its custom volumes (the documents keyed by it, lxdtx.storage.pools.volume_key).
        changes += [Delete("volume", v.name, expect=v.revision) for v in store.list("volume")
                    if v.name.startswith(tuple(f"{p}/custom/" for p in store.names("pool")))
                    and v.name.endswith("/" + doc.value["id"])]
        for kind in ("pool", "network"):
            for item in store.list(kind):
                members = item.value.get("members") or {}
                if doc.value["id"] in members:
                    rest = {k: v for k, v in members.items() if k != doc.value["id"]}
                    changes.append(Put(kind, item.name, dict(item.value, members=rest), expect=item.revision))
        for start in range(0, len(changes), 100):
            await self.daemon.store.commit(changes[start:start + 100])

    # -- becoming the first member ---------------------------------------------------------
    def https_address(self):
        address = self.daemon.config.get("core.https_address")
        if not address:
            raise errors.BadRequest("No core.https_address config key is set on this node")
        host, port = parse_host_port(address, 8443)
        if host in ("", "0.0.0.0", "::", "[::]"):
            raise errors.BadRequest("core.https_address must name one address of this server to cluster it, "
                                    f"not {address!r}")
        return host, port

    def check_bootstrap(self, name):
        if self.enabled:
            raise errors.BadRequest("This server is already clustered")
        _check_name(name)
        self.https_address()
        if self._busy:
            raise errors.BadRequest("This server is already being clustered")

    async def bootstrap(self, name):
        self.check_bootstrap(name)
        self._busy = True
        try:
            await self._bootstrap(name)
        finally:
            self._busy = False

    async def _bootstrap(self, name):
        host, port = self.https_address()
        daemon, files = self.daemon, self.files
        old_choice = daemon.store_choice
        async with daemon.journal.begin("cluster.enable", name) as intent:
            await intent.will("cluster-files")
            os.makedirs(files.dir, mode=0o700, exist_ok=True)
            await pki.ensure_cluster_ca(files.ca_cert, files.ca_key)
            await pki.ensure_member_cert(files.ca_cert, files.ca_key, files.cert, files.key, name, [host])
            spec = EtcdMemberSpec(name, host, port + ETCD_PEER_OFFSET, port + ETCD_CLIENT_OFFSET)
            choice = await start_member(daemon.dir, daemon.reactor, spec)
            ENABLE_ETCD_STARTED()
            member = Put(KIND, name, member_document(daemon, spec, host, port))

            config = Put(daemon.config.KIND, config_document(spec.member_id), daemon.config.values)

            async def take_effect():
                # The containers already here live on this, the first, member, and its pools and
                # networks are its own, node-specific keys and all (etcd is thrown
                # away if the bootstrap fails, so these commits need not be one).
                from lxdtx.cluster import networks, onall, pools, volumekeys

                located = [Put("container", doc.name, dict(doc.value, location=spec.member_id))
                           for doc in choice.store.list("container")]
                # Its pools and networks: their node-specific keys become this member's own.
                located += [Put(kind, doc.name, onall.as_first_member(doc.value, spec.member_id, keys))
                            for kind, keys in ((pools.POOL, pools.NODE_SPECIFIC),
                                               (networks.KIND, networks.NODE_SPECIFIC))
                            for doc in choice.store.list(kind)]
                for start in range(0, len(located), 100):
                    await choice.store.commit(located[start:start + 100])
                await volumekeys.rekey(choice.store, spec.member_id)  # its custom volumes are its own
                await choice.store.commit([member, config, *own_trust(daemon, choice.store, name)])
                ENABLE_COPIED()
                await threads.deferToThread(save_spec, files, spec)  # from here on the daemon is clustered
                ENABLE_TOOK_EFFECT()

            try:
                await daemon.store.move_to(choice.store, skip=lambda kind, _name: kind == "intent",
                                           before_switch=take_effect)
            except BaseException:
                await choice.close()
                raise
            daemon.store_choice = choice
            daemon.config.use_document(config_document(spec.member_id))
            # The intent lives in SQLite, which the daemon no longer uses: end it there.
            await old_choice.store.commit([intent.done()])
        await old_choice.close()
        self.log.info("This server is now the first member, {name}, of a cluster", name=name)


async def _remove_cluster_files(daemon):
    """Undo a bootstrap that did not take effect: the etcd it left, then cluster/."""
    files = EtcdFiles(daemon.dir)
    if load_spec(files) is not None:
        return  # it did take effect
    try:
        with open(files.pid) as f:
            pid = int(f.read().strip())
        if _is_our_etcd(pid, files):
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass
    await threads.deferToThread(shutil.rmtree, files.dir, True)


def settle_steps(daemon):
    """{journal step kind: its handler} of the cluster's changes, registered by the daemon."""
    return {"cluster-files": lambda: _remove_cluster_files(daemon)}
