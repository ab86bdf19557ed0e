# -*- test-case-name: tests.unit.test_devlxd,tests.integration.test_devlxd -*-
"""The /dev/lxd socket of one daemon: its listener, its mount, its guests' event streams.

One socket, `$DIR/devlxd/sock`, serves every container, as in the reference:
the directory (not the socket) is bind-mounted at `/dev/lxd` of each
container that allows it, so the socket a restarted daemon makes there is the
one every running container sees at once, with no remount; one listening fd
serves any number of containers; and since a caller is known by its peer
credentials, a socket per container would add nothing to whom we trust.
"""

import os
import sys

from twisted.logger import Logger

from lxdtx.asyncutil import ProcessError, run
from lxdtx.device import disk
from lxdtx.devlxd import callers, changes
from lxdtx.devlxd.api import GuestSite
from lxdtx.events import EventHub

SOCKET_DIR = "devlxd"
SOCKET_NAME = "sock"
GUEST_PATH = "/dev/lxd"
BACKLOG = 128

_MOUNTNS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "helpers", "mountns.py")


class GuestHub(EventHub):
    """The event streams of one container's guests."""

    def end_streams(self):
        """Close every stream (its container went, or no longer allows /dev/lxd)."""
        streams, self._listeners = self._listeners, set()
        for stream in streams:
            stream.drop()


class GuestSocket:
    """The guest API of one daemon (`daemon.devlxd`)."""

    log = Logger()

    def __init__(self, instances, images, websockets, reactor, directory):
        self.instances = instances
        self.images = images
        self.websockets = websockets
        self.reactor = reactor
        self.directory = directory  # the daemon's SOCKET_DIR
        self.path = os.path.join(self.directory, SOCKET_NAME)
        self._port = None
        self._hubs = {}  # container name -> EventHub of its guests' event streams

    # -- listening -----------------------------------------------------------
    def listen(self):
        """Listen on the socket (a dead daemon's socket file is replaced). Blocking: start-up."""
        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        os.chmod(self.directory, 0o755)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._port = self.reactor.listenUNIX(self.path, GuestSite(self), mode=0o666, backlog=BACKLOG)
        os.chmod(self.path, 0o666)

    async def stop(self):
        if self._port is not None:
            port, self._port = self._port, None
            await port.stopListening()

    # -- callers -----------------------------------------------------------------
    def container_of(self, credentials):
        """The running container a peer (callers.Credentials or None) calls from, or None."""
        if credentials is None:
            return None
        namespaces = {}
        for name in self.instances.records.names():
            pid = self.instances.runtime.init_pid(name)
            namespace = callers.pid_namespace(pid) if pid is not None else None
            if namespace is not None:
                namespaces[namespace] = name
        return callers.container_of(credentials.pid, namespaces)

    # -- events ------------------------------------------------------------------
    def hub(self, name):
        """The event hub of container `name`'s guests."""
        hub = self._hubs.get(name)
        if hub is None:
            hub = self._hubs[name] = GuestHub()
        return hub

    def changed(self, name, before, after):
        """A running container's (expanded config, expanded devices) changed: tell its guests."""
        hub = self._hubs.get(name)
        if hub is None:
            return
        if not callers.enabled(after[0]):
            self.forget(name)
            return
        for metadata in changes.config_events(before[0], after[0]):
            hub.send("config", metadata)
        for metadata in changes.device_events(before[1], after[1]):
            hub.send("device", metadata)

    def forget(self, name):
        """Container `name` went (deleted, renamed) or disallows /dev/lxd: end its guests' streams."""
        hub = self._hubs.pop(name, None)
        if hub is not None:
            hub.end_streams()

    # -- the mount -----------------------------------------------------------------
    def mount_line(self, config):
        """The liblxc line binding the socket directory at /dev/lxd, or None when not allowed.

        Read-only: no container may put anything in the directory all of them share."""
        if not callers.enabled(config):
            return None
        return disk.mount_entry(self.directory, GUEST_PATH, {"readonly": "true"}, True)

    async def apply_live(self, pid, old_config, new_config):
        """Mount or unmount /dev/lxd in the running container whose init is `pid` when
        `security.devlxd` changed."""
        was, now = callers.enabled(old_config), callers.enabled(new_config)
        if was == now:
            return
        if now:
            # A missing /dev/lxd is made owned like the container's /dev (mountns).
            argv = [sys.executable, "-I", "-S", _MOUNTNS, "mount", str(pid), self.directory, GUEST_PATH, "ro"]
        else:
            argv = [sys.executable, "-I", "-S", _MOUNTNS, "umount", str(pid), GUEST_PATH]
        try:
            await run(argv)
        except ProcessError as e:
            # Unmounted by the guest itself, say: the API refuses it anyway while disallowed.
            self.log.warn("Changing /dev/lxd of a running container failed: {error}",
                          error=e.stderr.decode("utf-8", "replace").strip())
