# -*- test-case-name: tests.integration.test_server -*-
"""The daemon's collaborators, built once and handed to every handler as `req.daemon`."""

import os
import socket

from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from lxdtx import hostinfo, tls
from lxdtx.candid import Candid
from lxdtx.config.server import HashingPool, ServerConfig
from lxdtx.cors import Cors
from lxdtx.devlxd.server import GuestSocket
from lxdtx.events import EventHub
from lxdtx.image.store import ImageStore
from lxdtx.instance.lifecycle import Instances
from lxdtx.journal import Journal
from lxdtx.migration import btrfsmigration
from lxdtx.network.networks import Networks
from lxdtx.operations import Operations
from lxdtx.profiles import Profiles
from lxdtx.storage.pools import Pools
from lxdtx.trust import PasswordAttempts, Trust, UntrustedConnections
from lxdtx.websocket.server import Factories


class Daemon:
    """State directory, store, events, operations, config, trust and the domain objects."""

    log = Logger()

    def __init__(self, state_dir, store, reactor):
        self.dir = state_dir
        self.reactor = reactor
        self.store = store
        # Before the subsystems: each registers the steps of its changes with it.
        self.journal = Journal(store)
        self.events = EventHub()
        self.operations = Operations(self.events, reactor)
        self.websockets = Factories(reactor)
        # The trust password's scrypt runs on two threads of its own (see HashingPool).
        self.password_hashing = HashingPool(reactor, ThreadPool(minthreads=0, maxthreads=2, name="lxdtx-scrypt"))
        self.config = ServerConfig(store, defer_to_thread=self.password_hashing.run)
        self.cors = Cors(self.config)
        self.trust = Trust(store, state_dir)
        self.trust.candid = Candid(self)
        self.password_attempts = PasswordAttempts(reactor)
        self.untrusted_connections = UntrustedConnections()
        self.profiles = Profiles(store, self.events)
        self.images = ImageStore(self)
        self.pools = Pools(self)
        btrfsmigration.register(self)
        self.instances = Instances(self)
        self.networks = Networks(self)
        self.devlxd = GuestSocket(self)
        self.ready = False
        self.hostname = socket.gethostname()
        self.cert_path = self.path("server.crt")
        self.key_path = self.path("server.key")
        # Extra `environment` facts from subsystems (e.g. storage drivers in use).
        self.environment_sources = []
        # Called with no arguments by `lxdtx shutdown` before the process exits.
        self.shutdown_hooks = []
        self.https_address = None  # (host, port) while the HTTPS listener runs

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
