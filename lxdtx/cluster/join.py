# -*- test-case-name: tests.integration.test_cluster_join -*-
"""Joining a cluster: the joiner asks a member to accept it, then starts its etcd into
the cluster's.

1. The joiner's server certificate is trusted by the cluster already (the client did
   `POST /1.0/certificates` with the trust password against the member, as the era's
   `lxd init` did).
2. The joiner calls `POST /internal/cluster/accept {name, address}` on that member over
   HTTPS, showing its server certificate and pinning `cluster_certificate`. The member
   adds the joiner's etcd to the cluster (MemberAdd) and answers with the cluster
   certificate and key and the etcd members to start with.
3. The joiner writes them, issues itself an etcd certificate, starts its etcd with
   initial-cluster-state=existing and from then on uses the cluster's store; its own
   SQLite documents are left unused (a joiner must hold no containers, images, storage
   pools or managed networks, whose host state could not follow). member.json written
   is the moment the join takes effect; before that the journal undoes it, and a join
   that fails after MemberAdd removes the added etcd member again (the cluster's quorum
   counts it).
"""

import base64
import json
import os

from twisted.internet import threads
from twisted.logger import Logger
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from lxdtx import errors, tls
from lxdtx.cluster import pki
from lxdtx.cluster.backend import start_member
from lxdtx.cluster.etcdprocess import EtcdMemberSpec, save_spec
from lxdtx.cluster.etcdtls import ClusterPolicy
from lxdtx.config.types import parse_host_port
from lxdtx.state import ABSENT, Put
from lxdtx.state.etcdgateway import Endpoint, EtcdGateway, EtcdRefused, EtcdUnavailable

# What a joiner must not hold: its host state (volumes, bridges, files) could not follow it.
FRESH_KINDS = {"container": "containers", "image": "images", "pool": "storage pools", "network": "managed networks"}

log = Logger()


@implementer(IPolicyForHTTPS)
class _Pinned:
    """The joiner's HTTPS to the member: pin its certificate, show ours."""

    def __init__(self, peer_pem, cert_path, key_path):
        self.peer_pem, self.cert_path, self.key_path = peer_pem, cert_path, key_path

    def creatorForNetloc(self, hostname, port):
        return tls.client_creator(hostname.decode(), self.peer_pem, self.cert_path, self.key_path)


async def _accept_call(daemon, address, certificate, body):
    import treq
    from twisted.web.client import Agent

    host, port = parse_host_port(address, 8443)
    url = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    agent = Agent(daemon.reactor, contextFactory=_Pinned(certificate, daemon.cert_path, daemon.key_path))
    try:
        response = await treq.client.HTTPClient(agent).post(
            url + "/internal/cluster/accept", data=json.dumps(body).encode(),
            headers={"Content-Type": ["application/json"]}, timeout=60)
        answer = json.loads(await response.content())
    except Exception as e:
        raise errors.BadRequest(f"Could not reach the cluster member at {address}: "
                                f"{getattr(e, 'message', None) or type(e).__name__}") from None
    if response.code != 200:
        raise errors.BadRequest(f"The cluster member at {address} refused the join: {answer.get('error')}")
    return answer["metadata"]


def check_join(daemon, name, address, certificate):
    cluster = daemon.cluster
    if cluster.enabled:
        raise errors.BadRequest("This server is already clustered")
    if not certificate:
        raise errors.BadRequest("No target cluster node certificate provided")
    try:
        tls.pem_to_der(certificate)
    except Exception:
        raise errors.BadRequest("Invalid cluster_certificate: not a PEM certificate") from None
    try:
        parse_host_port(address, 8443)
    except ValueError as e:
        raise errors.BadRequest(f"Invalid cluster_address: {e}") from None
    from lxdtx.cluster.membership import _check_name

    _check_name(name)
    cluster.https_address()
    held = [label for kind, label in FRESH_KINDS.items() if daemon.store.names(kind)]
    if held:
        raise errors.BadRequest(f"A server joining a cluster must be empty; this one has {', '.join(held)}")


async def join(daemon, name, address, certificate):
    from lxdtx.cluster.membership import ETCD_CLIENT_OFFSET, ETCD_PEER_OFFSET, KIND, config_document, member_document

    check_join(daemon, name, address, certificate)
    cluster, files = daemon.cluster, daemon.cluster.files
    host, port = cluster.https_address()
    answer = await _accept_call(daemon, address, certificate, {"name": name, "address": f"{host}:{port}"})
    spec = EtcdMemberSpec(name, host, port + ETCD_PEER_OFFSET, port + ETCD_CLIENT_OFFSET,
                          answer["initial_cluster"], "existing")
    old_choice = daemon.store_choice
    joined = False
    try:
        async with daemon.journal.begin("cluster.join", name) as intent:
            await intent.will("cluster-files")
            os.makedirs(files.dir, mode=0o700, exist_ok=True)
            await threads.deferToThread(_write_ca, files, answer)
            await pki.ensure_member_cert(files.ca_cert, files.ca_key, files.cert, files.key, name, [host])
            choice = await start_member(daemon.dir, daemon.reactor, spec)
            member = Put(KIND, name, member_document(daemon, spec, host, port), expect=ABSENT)

            # Its server config (its own address, its trust password) stays its own.
            config = Put(daemon.config.KIND, config_document(spec.member_id), daemon.config.values)

            async def take_effect():
                await choice.store.commit([member, config])
                await threads.deferToThread(save_spec, files, spec)

            try:
                # Nothing of ours goes over: the cluster's documents are the state now.
                await daemon.store.move_to(choice.store, skip=lambda kind, _name: True, before_switch=take_effect)
            except BaseException:
                await choice.close()
                raise
            joined = True
            daemon.store_choice = choice
            daemon.config.use_document(config_document(spec.member_id))
            await old_choice.store.commit([intent.done()])
    finally:
        if not joined:
            await _withdraw(daemon, answer, files)
    await old_choice.close()
    log.info("This server joined the cluster as {name}", name=name)
    # The cluster's pools and networks, made here from their shared config.
    from lxdtx.cluster import networks, onall, pools

    await onall.catch_up(daemon, pools.POOL, lambda pool: pools.create_local(daemon, pool))
    await onall.catch_up(daemon, networks.KIND, lambda network: networks.create_local(daemon, network))


def _write_ca(files, answer):
    with open(files.ca_cert, "w") as f:
        f.write(answer["cluster_certificate"])
    fd = os.open(files.ca_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64decode(answer["cluster_key"]))


async def _withdraw(daemon, answer, files):
    """Take our etcd member out of the cluster again (through the member that added it)."""
    if not os.path.exists(files.cert):
        return
    gateway = EtcdGateway([Endpoint(answer["etcd_client_url"], answer["etcd_client_url"])], daemon.reactor,
                          ClusterPolicy(files.ca_cert, files.cert, files.key), timeout=10)
    try:
        await gateway.member_remove(answer["etcd_member_id"])
    except (EtcdUnavailable, EtcdRefused):
        log.failure("Could not take the etcd member of a failed join out of the cluster")
    finally:
        await gateway.close()


async def accept(daemon, name, address):
    """On a member: add the joiner's etcd to the cluster; what the joiner needs to start it."""
    from lxdtx.cluster.membership import ETCD_PEER_OFFSET, KIND, _check_name, reconfigure

    cluster = daemon.cluster
    if not cluster.enabled:
        raise errors.BadRequest("This server is not clustered")
    _check_name(name)
    if daemon.store.exists(KIND, name):
        raise errors.BadRequest(f"The cluster already has a member named '{name}'")
    try:
        host, port = parse_host_port(address, 8443)
    except ValueError as e:
        raise errors.BadRequest(f"Invalid address: {e}") from None
    peer_url = (f"https://[{host}]:{port + ETCD_PEER_OFFSET}" if ":" in host
                else f"https://{host}:{port + ETCD_PEER_OFFSET}")
    gateway = daemon.store.backend.gateway
    try:
        added = await reconfigure(lambda: gateway.member_add([peer_url]), daemon.reactor)
    except EtcdRefused as e:
        raise errors.BadRequest(f"etcd refused the new member: {e}") from None
    initial = {}
    for member in await gateway.member_list():
        urls = member.get("peerURLs") or []
        if not urls:
            continue
        initial[member.get("name") or (name if urls[0] == peer_url else urls[0])] = urls[0]
    files = cluster.files
    with open(files.ca_cert) as f:
        ca_cert = f.read()
    with open(files.ca_key, "rb") as f:
        ca_key = base64.b64encode(f.read()).decode()
    return {"cluster_certificate": ca_cert, "cluster_key": ca_key, "initial_cluster": initial,
            "etcd_member_id": added["ID"], "etcd_client_url": cluster.spec.client_url}
