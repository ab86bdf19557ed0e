# -*- test-case-name: tests.integration.test_server -*-
"""The service tree: start-up and shutdown order of one daemon."""

import ctypes
import os
import shutil

from twisted.application import service
from twisted.internet import defer
from twisted.logger import ILogObserver, Logger, globalLogPublisher

from lxdtx import recovery, sdnotify, singleton, statedir
from lxdtx.asyncutil import run
from lxdtx.cluster import membership, volumekeys
from lxdtx.cluster.backend import open_store
from lxdtx.cluster.events import MemberEvents
from lxdtx.cluster.orphans import OrphanedIntents
from lxdtx.daemon import Daemon
from lxdtx.events import LogForwarder
from lxdtx.exec.recording import RecordExpiry
from lxdtx.instance import boot
from lxdtx.listeners import Listeners
from lxdtx.state.switch import SwitchableStore


class LxdtxService(service.MultiService):
    """Starts the store, the daemon and its listeners; SIGTERM leaves containers running."""

    log = Logger()

    def __init__(self, state_dir, reactor, https=None, auto_init=False, log_observer=None, etcd=()):
        super().__init__()
        self.log_observer = log_observer
        self.etcd = list(etcd)
        self._store = None
        self.auto_init = auto_init
        self.state_dir = os.path.abspath(state_dir)
        self.reactor = reactor
        self.https = https
        self.daemon = None
        self.started = None
        self._listeners = None
        self._forwarder = None
        self._lock = None

    def setServiceParent(self, parent):
        # twistd logs through the application's ILogObserver component when it has one.
        if self.log_observer is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self.log_observer)
        super().setServiceParent(parent)

    def startService(self):
        super().startService()
        self.started = defer.Deferred.fromCoroutine(self._start())
        self.started.addErrback(self._start_failed)

    def _start_failed(self, failure):
        if failure.check(singleton.AlreadyRunning):
            self.log.error("Daemon start-up failed: {error}", error=failure.value)
        else:
            self.log.failure("Daemon start-up failed", failure)
        # A start can fail before the reactor runs (the lock is taken at once): stop it then.
        stop = lambda _: self.reactor.callWhenRunning(self.reactor.stop)  # noqa: E731
        defer.Deferred.fromCoroutine(self._end_started_children()).addBoth(stop)

    async def _end_started_children(self):
        """A start that failed ends the dnsmasq processes it had spawned (the next start
        spawns its own), rather than leave them to nobody."""
        if self.daemon is not None:
            try:
                await self.daemon.networks.stop_all_dnsmasq()
            except Exception:
                self.log.failure("Stopping dnsmasq after a failed start failed")
        choice = self.daemon.store_choice if self.daemon is not None else self._store
        if choice is not None:
            try:
                await choice.close()  # and its etcd, if it runs one
            except Exception:
                self.log.failure("Closing the store after a failed start failed")

    async def _start(self):
        os.makedirs(self.state_dir, mode=statedir.MODES[""], exist_ok=True)
        self._lock = singleton.acquire(self.state_dir)  # before anything touches the host
        statedir.restrict(self.state_dir)
        spool = os.path.join(self.state_dir, "tmp")
        shutil.rmtree(spool, ignore_errors=True)
        os.makedirs(spool, mode=0o700)
        self._store = await open_store(self.state_dir, self.reactor, self.etcd)
        # Switchable: becoming a cluster's first member moves the state into etcd at run time.
        store = SwitchableStore(self._store.store)
        daemon = self.daemon = Daemon(self.state_dir, store, self.reactor, store_choice=self._store,
                                      request_shutdown=self.request_shutdown)
        if self._store.spec is not None:
            daemon.config.use_document(membership.config_document(self._store.spec.member_id))
            await volumekeys.rekey(daemon.store)  # before recovery sweeps volumes by their keys
        await daemon.load_certificate()
        daemon.liblxc_version = await _liblxc_version()
        await daemon.profiles.ensure_default()
        await daemon.pools.mount_all()
        await daemon.instances.setup()
        # Before the networks come up (they rebuild DHCP hosts from the rows) and before listening.
        await recovery.run(daemon)
        RecordExpiry(daemon.instances.log_root, self.reactor).setServiceParent(self)
        # Networks first: containers autostarted below need their bridges and DHCP.
        await daemon.networks.restore_all()
        daemon.shutdown_hooks.append(lambda: boot.shutdown_all(daemon.instances))

        self._listeners = Listeners(daemon, daemon.router, self.reactor)
        daemon.config.on_apply("https_address", self._listeners.set_https)
        self._listeners.listen_unix()
        # Before containers autostart; running ones see the new socket in their /dev/lxd at once.
        daemon.devlxd.listen()
        address = daemon.config.get("core.https_address")
        if self.https and self.https != address:
            await daemon.config.update({"core.https_address": self.https}, replace=False)
        elif address:
            await self._listeners.set_https("", address)

        if self.auto_init:
            from lxdtx.init import auto_init

            await auto_init(daemon)
        daemon.image_upkeep.setServiceParent(self)
        MemberEvents(daemon, self.reactor).setServiceParent(self)  # the other members' events, here too
        OrphanedIntents(daemon, self.reactor).setServiceParent(self)  # a dead coordinator's, undone here
        self._forwarder = LogForwarder(daemon.events)
        globalLogPublisher.addObserver(self._forwarder)
        daemon.ready = True
        _trim_heap()
        self.log.info("lxdtx ready on {dir}; exec runs through {path}", dir=self.state_dir,
                      path=daemon.instances.seeds.exec_path())
        sdnotify.notify("READY=1\nSTATUS=ready")
        await boot.on_daemon_start(daemon.instances)

    async def _stop(self):
        sdnotify.notify("STOPPING=1")
        if self.daemon is not None:
            # SIGTERM leaves networks up: dnsmasq keeps serving the running containers.
            await self.daemon.networks.stop_supervising()
        if self._forwarder is not None:
            globalLogPublisher.removeObserver(self._forwarder)
        if self._listeners is not None:
            await self._listeners.stop()
        if self.daemon is not None:
            await self.daemon.devlxd.stop()
        if self.daemon is not None:
            self.daemon.password_hashing.stop()
            if getattr(self.daemon, "cluster", None) is not None:
                await self.daemon.cluster.peers.close()  # connections kept to other members
        choice = self.daemon.store_choice if self.daemon is not None else self._store
        if choice is not None:
            await choice.close()
        if self._lock is not None:
            singleton.release(self._lock)
            self._lock = None

    def stopService(self):
        super().stopService()
        return defer.Deferred.fromCoroutine(self._stop())

    def request_shutdown(self):
        """`lxdtx shutdown`: stop what must stop (containers), then the process."""
        defer.Deferred.fromCoroutine(self._shutdown())

    async def _shutdown(self):
        self.daemon.ready = False
        for hook in self.daemon.shutdown_hooks:
            try:
                await hook()
            except Exception:
                self.log.failure("Shutdown step failed")
        self.reactor.stop()


async def _liblxc_version():
    try:
        _, out, _ = await run(["lxc-start", "--version"])
    except Exception:
        return ""
    return out.decode().strip()


def _trim_heap():
    """Give memory freed during start-up back to the system."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
