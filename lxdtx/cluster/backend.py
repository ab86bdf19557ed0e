# -*- test-case-name: tests.integration.test_etcd_daemon -*-
"""Which state store a daemon opens: SQLite alone, an etcd given by address, or its own
supervised etcd member once it is a cluster member."""

import os

from lxdtx.cluster.etcdprocess import EtcdFiles, EtcdSupervisor, load_spec
from lxdtx.cluster.etcdtls import ClusterPolicy
from lxdtx.cluster.heartbeat import Heartbeat, Liveness
from lxdtx.state.etcd import EtcdStore
from lxdtx.state.etcdgateway import Endpoint, EtcdGateway
from lxdtx.state.sqlite import SQLiteStore


class StoreChoice:
    """The opened store and what runs it (the supervised etcd, if any), with this
    member's heartbeat and the view of who else is online."""

    def __init__(self, store, supervisor=None, spec=None):
        self.store, self.supervisor, self.spec = store, supervisor, spec
        self.heartbeat = self.liveness = None

    async def close(self):
        if self.heartbeat is not None:
            await self.heartbeat.stop(revoke=True)  # a clean stop shows offline at once
        if self.liveness is not None:
            await self.liveness.close()
        await self.store.close()
        if self.supervisor is not None:
            await self.supervisor.stop()


def _policy(files):
    if all(os.path.exists(p) for p in (files.ca_cert, files.cert, files.key)):
        return ClusterPolicy(files.ca_cert, files.cert, files.key)
    return None


async def open_store(state_dir, reactor, etcd_urls=()):
    """Open the daemon's store. `etcd_urls`: an etcd cluster given by address (https ones
    are reached with the cluster certificate files of `state_dir/cluster/`)."""
    files = EtcdFiles(state_dir)
    if etcd_urls:
        policy = _policy(files) if any(u.startswith("https:") for u in etcd_urls) else None
        store = EtcdStore(EtcdGateway([Endpoint(u, u) for u in etcd_urls], reactor, policy), reactor)
        await store.open()
        return StoreChoice(store)
    spec = load_spec(files)
    if spec is None:
        store = SQLiteStore(os.path.join(state_dir, "lxdtx.db"), reactor=reactor)
        await store.open()
        return StoreChoice(store)
    return await start_member(state_dir, reactor, spec)


async def start_member(state_dir, reactor, spec):
    """Start this member's etcd (per `spec`), open the store on it, start its heartbeat."""
    files = EtcdFiles(state_dir)
    policy = _policy(files)
    probe_gateway = EtcdGateway([Endpoint(spec.name, spec.local_client_url)], reactor, policy, timeout=5)
    supervisor = EtcdSupervisor(spec, files, reactor, lambda: probe_gateway.answers(probe_gateway.endpoints[0]))
    try:
        await supervisor.start()
    finally:
        await probe_gateway.close()
    endpoints = [Endpoint(spec.name, spec.local_client_url)]
    store = EtcdStore(EtcdGateway(endpoints, reactor, policy), reactor)
    choice = StoreChoice(store, supervisor, spec)
    try:
        await store.open()
        choice.heartbeat = Heartbeat(store.gateway, reactor, spec.member_id, {"name": spec.name})
        await choice.heartbeat.start()
        choice.liveness = Liveness(EtcdGateway(endpoints, reactor, policy), reactor)
        await choice.liveness.open()
    except Exception:
        await choice.close()
        raise
    return choice
