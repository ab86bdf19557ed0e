"""A member's etcd as the daemon runs it: a supervised child with peer and client TLS under
the cluster certificate, restarted when it dies, joined by a second member through
MemberAdd; member heartbeats as leases. Real etcd processes on loopback, free ports,
state under /var/tmp; everything stopped by pid and removed afterwards."""

import os
import shutil
import signal
import ssl
import tempfile
import time
import urllib.error
import urllib.request

from twisted.internet import defer, reactor, threads
from twisted.trial.unittest import TestCase

from lxdtx import tls
from lxdtx.cluster import pki
from lxdtx.cluster.etcdprocess import EtcdFiles, EtcdMemberSpec, EtcdSupervisor
from lxdtx.cluster.etcdtls import ClusterPolicy
from lxdtx.cluster.heartbeat import Heartbeat, Liveness
from lxdtx.state import Put
from lxdtx.state.etcd import EtcdStore
from lxdtx.state.etcdgateway import Endpoint, EtcdGateway
from tests.etcdproc import ETCD, free_port
from tests.unit.test_store_etcd import eventually


class SupervisedEtcdTests(TestCase):
    """Members' etcds started the way the daemon starts them."""

    timeout = 180

    def setUp(self):
        if not os.path.exists(ETCD):
            self.skipTest("etcd is not installed (Debian package etcd-server)")
        self.root = tempfile.mkdtemp(prefix="lxdtx-cluster-", dir="/var/tmp")
        self.addCleanup(shutil.rmtree, self.root, ignore_errors=True)
        first = self.files("m1")
        os.makedirs(first.dir, mode=0o700)
        pki.generate_cluster_ca(first.ca_cert, first.ca_key)

    def files(self, name):
        return EtcdFiles(os.path.join(self.root, name))

    def gateway(self, files, spec):
        policy = ClusterPolicy(files.ca_cert, files.cert, files.key)
        return EtcdGateway([Endpoint(spec.name, spec.local_client_url)], reactor, policy, timeout=10)

    async def member(self, name, initial_cluster=None, state="new", spec=None):
        """Start member `name`'s etcd with a certificate it issued itself from the cluster key."""
        files, ca = self.files(name), self.files("m1")
        if name != "m1":
            os.makedirs(files.dir, mode=0o700, exist_ok=True)
            shutil.copy(ca.ca_cert, files.ca_cert)
            shutil.copy(ca.ca_key, files.ca_key)
        await pki.ensure_member_cert(files.ca_cert, files.ca_key, files.cert, files.key, name, ["127.0.0.1"])
        spec = spec or EtcdMemberSpec(name, "127.0.0.1", free_port(), free_port(), initial_cluster, state)
        gateway = self.gateway(files, spec)
        supervisor = EtcdSupervisor(spec, files, reactor, lambda: gateway.answers(gateway.endpoints[0]))
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(supervisor.stop()))
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(gateway.close()))
        await supervisor.start()
        return spec, files, supervisor

    async def store(self, files, spec):
        store = EtcdStore(self.gateway(files, spec), reactor)
        await store.open()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(store.close()))
        return store

    async def test_tls_store_and_restart(self):
        """The store works over client TLS; etcd killed is restarted by its supervisor and the
        store carries on; the files are root's alone."""
        spec, files, supervisor = await self.member("m1")
        store = await self.store(files, spec)
        await store.commit([Put("profile", "default", {"v": 1})])
        self.assertEqual(os.stat(files.dir).st_mode & 0o777, 0o700)
        self.assertEqual(os.stat(files.key).st_mode & 0o777, 0o600)
        pid = supervisor.pid
        os.kill(pid, signal.SIGKILL)
        self.assertTrue(await eventually(lambda: supervisor.pid not in (None, pid), timeout=20))
        self.assertEqual(supervisor.restarts, 1)
        revision = None
        for _ in range(100):
            try:
                revision = await store.commit([Put("profile", "default", {"v": 2})])
                break
            except Exception:
                await threads.deferToThread(time.sleep, 0.2)
        self.assertIsNotNone(revision)
        fresh = await self.store(files, spec)
        self.assertEqual(fresh.value("profile", "default"), {"v": 2})

    async def test_clients_need_a_cluster_certificate(self):
        """Without a certificate, or with one the cluster certificate did not sign, etcd's
        client port refuses the connection; so does a client that is shown a server
        certificate the cluster did not sign."""
        spec, files, _ = await self.member("m1")
        stranger = os.path.join(self.root, "stranger")
        os.makedirs(stranger)
        tls.generate_keypair(os.path.join(stranger, "c.crt"), os.path.join(stranger, "c.key"), client=True)

        def attempt(cert=None):
            ctx = ssl.create_default_context(cafile=files.ca_cert)
            ctx.check_hostname = False
            if cert:
                ctx.load_cert_chain(os.path.join(stranger, "c.crt"), os.path.join(stranger, "c.key"))
            request = urllib.request.Request(spec.local_client_url + "/v3/kv/range", data=b'{"key":"YQ=="}')
            try:
                with urllib.request.urlopen(request, context=ctx, timeout=10) as r:
                    return r.status
            except (urllib.error.URLError, ssl.SSLError, ConnectionError) as e:
                return e

        for outcome in (await threads.deferToThread(attempt), await threads.deferToThread(attempt, True)):
            self.assertNotEqual(outcome, 200)
        wrong = EtcdGateway([Endpoint("m1", spec.local_client_url)], reactor,
                            ClusterPolicy(os.path.join(stranger, "c.crt"), files.cert, files.key), timeout=5)
        self.assertFalse(await wrong.answers(wrong.endpoints[0]))
        await wrong.close()

    async def test_join_with_member_add(self):
        """A second member is added through the first one's etcd (MemberAdd) and starts with
        initial-cluster-state=existing: it holds what the first one wrote, and what is
        written through it reaches the first."""
        spec1, files1, _ = await self.member("m1")
        first = await self.store(files1, spec1)
        await first.commit([Put("container", "c1", {"on": "m1"})])
        spec2 = EtcdMemberSpec("m2", "127.0.0.1", free_port(), free_port())
        gateway = self.gateway(files1, spec1)
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(gateway.close()))
        await gateway.member_add([spec2.peer_url])
        spec2.initial_cluster = {"m1": spec1.peer_url, "m2": spec2.peer_url}
        spec2.state = "existing"
        _, files2, _ = await self.member("m2", spec=spec2)
        second = await self.store(files2, spec2)
        self.assertTrue(await eventually(lambda: second.exists("container", "c1"), timeout=30))
        await second.commit([Put("container", "c2", {"on": "m2"})])
        self.assertTrue(await eventually(lambda: first.exists("container", "c2")))
        names = sorted(m["name"] for m in await gateway.member_list())
        self.assertEqual(names, ["m1", "m2"])

    async def test_heartbeats(self):
        """Both members show online; one that stops heartbeating shows offline within the
        bound (ttl + 2 s); one that leaves (revoking its lease) shows offline at once."""
        spec, files, _ = await self.member("m1")
        gateways = [self.gateway(files, spec) for _ in range(3)]
        for g in gateways:
            self.addCleanup(lambda g=g: defer.Deferred.fromCoroutine(g.close()))
        ttl = 3
        beats = [Heartbeat(gateways[i], reactor, name, {"url": "https://x"}, ttl=ttl, interval=1)
                 for i, name in enumerate(("m1", "m2"))]
        for beat in beats:
            await beat.start()
            self.addCleanup(lambda beat=beat: defer.Deferred.fromCoroutine(beat.stop(revoke=False)))
        liveness = Liveness(gateways[2], reactor, ttl=ttl)
        await liveness.open()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(liveness.close()))
        self.assertEqual(liveness.members(), ["m1", "m2"])
        await threads.deferToThread(time.sleep, ttl + 1)  # refreshed past its first TTL
        self.assertEqual(liveness.status("m2"), ("Online", "fully operational"))
        stopped = time.monotonic()
        await beats[1].stop(revoke=False)  # as if m2 died
        self.assertTrue(await eventually(lambda: not liveness.online("m2"), timeout=ttl + 5))
        elapsed = time.monotonic() - stopped
        self.assertLessEqual(elapsed, ttl + 2)
        status, message = liveness.status("m2")
        self.assertEqual(status, "Offline")
        self.assertRegex(message, r"^no heartbeat since \d+s$")
        self.assertTrue(liveness.online("m1"))
        await beats[0].stop(revoke=True)
        self.assertTrue(await eventually(lambda: not liveness.online("m1"), timeout=2))
