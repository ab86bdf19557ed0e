# -*- test-case-name: tests.integration.test_server -*-
"""The daemon's collaborators, built once and handed to every handler as `req.daemon`."""

import os
import socket

from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from lxdtx import hostinfo, resources, tls
from lxdtx.candid import Candid
from lxdtx.cluster import membership, notify
from lxdtx.cluster.membership import Membership
from lxdtx.config.server import HashingPool, ServerConfig
from lxdtx.cors import Cors
from lxdtx.devlxd.server import SOCKET_DIR, GuestSocket
from lxdtx.events import EventHub
from lxdtx.image.store import ImageStore
from lxdtx.image.upkeep import ImageUpkeep
from lxdtx.instance import settle
from lxdtx.instance.lifecycle import Instances
from lxdtx.journal import Journal
from lxdtx.migration import btrfsmigration
from lxdtx.network.networks import Networks
from lxdtx.operations import Operations
from lxdtx.profiles import Profiles
from lxdtx.resources.answers import Answers
from lxdtx.resources.root import InfoCache
from lxdtx.router import Router
from lxdtx.storage.pools import Pools
from lxdtx.trust import PasswordAttempts, Trust, UntrustedConnections
from lxdtx.websocket.server import Factories


class Daemon:
    """The daemon's collaborators: the factory that builds every one of them, in order, each
    given what it uses (`_build`), then joins the few that refer to each other (`_wire`).

    Nothing else builds a collaborator or sets one on another: a change of who talks to
    whom is made here.
    """

    log = Logger()

    def __init__(self, state_dir, store, reactor, store_choice=None, request_shutdown=None):
        self.dir = state_dir
        self.reactor = reactor
        self.store = store
        self.store_choice = store_choice  # the cluster parts: etcd supervisor, heartbeat, liveness
        self.request_shutdown = request_shutdown  # fn() that stops the service, for `lxdtx shutdown`
        self.ready = False
        self.hostname = socket.gethostname()
        self.cert_path = self.path("server.crt")
        self.key_path = self.path("server.key")
        self.https_address = None  # (host, port) while the HTTPS listener runs
        self._build()
        self._wire()

    def _build(self):
        store, reactor = self.store, self.reactor
        # First: the journal asks the cluster for this member's id, every subsystem registers with it.
        self.cluster = Membership(self)
        cluster = self.cluster
        self.journal = Journal(store, member=lambda: cluster.member_id)
        self.events = EventHub()
        self.operations = Operations(self.events, reactor)
        self.websockets = Factories(reactor)
        # The trust password's scrypt runs on two threads of its own (see HashingPool).
        self.password_hashing = HashingPool(reactor, ThreadPool(minthreads=0, maxthreads=2, name="lxdtx-scrypt"))
        self.config = ServerConfig(store, defer_to_thread=self.password_hashing.run)
        self.cors = Cors(self.config)
        self.trust = Trust(store, self.dir, candid=Candid(self.config, store, reactor))
        self.password_attempts = PasswordAttempts(reactor)
        self.untrusted_connections = UntrustedConnections()
        self.profiles = Profiles(store, self.events)
        self.images = ImageStore(self)
        self.pools = Pools(self)
        self.instances = Instances(self)
        self.networks = Networks(self)
        self.devlxd = GuestSocket(self.instances, self.images, self.websockets, reactor, self.path(SOCKET_DIR))
        self.image_upkeep = ImageUpkeep(self.images, self.config, reactor)  # a service: started by lxdtx.service
        # Extra `environment` facts of `GET /1.0` (cluster, storage drivers in use).
        self.environment_sources = [self.cluster.environment, self.pools.environment]
        # Called with no arguments by `lxdtx shutdown` before the process exits.
        self.shutdown_hooks = []
        self.router = self._build_router()

    def _build_router(self):
        """The HTTP side: every resource's endpoints, handed this daemon, with the answers
        rendered once (the trusted `GET /1.0` rebuilt as the store changes)."""
        return Router(self, resources.endpoints(), Answers(InfoCache(self.store)))

    def _wire(self):
        """The links that go both ways, in order: each a step of its own."""
        self._wire_journal()
        self._wire_profiles()
        self._wire_images()

    def _wire_journal(self):
        """Who resolves each kind of step an interrupted change left in the journal."""
        steps = {
            **self.images.settle_steps(),
            "pool": self.pools.settle,
            **btrfsmigration.settle_steps(self),
            **settle.settle_steps(self.instances),
            "network": self.networks.settle,
            **membership.settle_steps(self),
        }
        for kind, handler in steps.items():
            self.journal.handle(kind, handler)

    def _wire_profiles(self):
        """Profiles are used by containers: changes are checked against them here, then on
        the other cluster members holding users of the profile."""
        self.profiles.wire(
            users=self.instances.records.profile_users,
            rename_changes=self.instances.records.profile_rename_changes,
            change_hooks=[self.instances.updates.profile_changing,
                          lambda name, old, new: notify.profile_changing(self, name, old, new)],
        )

    def _wire_images(self):
        """Before an image goes, each pool drops the volume it cached of it."""
        self.images.wire(delete_hooks=[self.pools.image_deleted])

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    async def load_certificate(self):
        await tls.ensure_keypair(self.cert_path, self.key_path)
        with open(self.cert_path) as f:
            self.cert_pem = f.read()
        self.cert_fingerprint = tls.fingerprint(tls.pem_to_der(self.cert_pem))

    def addresses(self):
        if self.https_address is None:
            return []
        return hostinfo.listen_addresses(*self.https_address)

    def base_url_for(self, http):
        """The https URL a remote peer may use to reach this daemon (for migrations)."""
        addresses = self.addresses()
        return f"https://{addresses[0]}" if addresses else ""
