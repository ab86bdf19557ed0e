# -*- test-case-name: tests.integration.test_unix_devices -*-
"""`unix-char` / `unix-block` devices of running containers.

Each device's node is made on the host, in `devices/<container>/` of the state
directory (with the device's numbers, its uid/gid shifted by the container's id
map, its mode), and bind-mounted at its path inside. A node made in an
unprivileged container's own /dev could not be opened: that tmpfs belongs to
the container's user namespace, which may not own devices. The container's
device cgroup allows the node's numbers. At start both are liblxc lines; live,
a helper that joins the container's mount namespace moves the mount in
(lxdtx/helpers/mountns.py) and lxc-cgroup sets the rule.

A device is plugged while its node exists in that directory, so what is
plugged survives a daemon restart. Devices with `required=false` are watched
with inotify on the host directory of their source: plugged when the source
appears, unplugged when it goes (`unix_device_hotplug`).

`usb` and `gpu` devices go the same way, one node for each host node they
select (lxdtx.device.usb, lxdtx.device.gpu), named `<type>.<device>.<path>` in
that directory; USB devices also follow the kernel's uevents
(lxdtx.instance.uevents).
"""

import os
import shutil
import stat
import sys

from twisted.internet import defer, inotify, threads
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from lxdtx import errors
from lxdtx.asyncutil import ProcessError, run
from lxdtx.device import disk, gpu, unix, usb
from lxdtx.instance import lxcconf, model
from lxdtx.instance.uevents import UeventListener

_MOUNTNS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "helpers", "mountns.py")
# Creations and removals in a watched directory (never IN_DELETE_SELF: with it
# Twisted closes the whole notifier when one watched directory goes).
_MASK = inotify.IN_CREATE | inotify.IN_DELETE | inotify.IN_MOVED_TO | inotify.IN_MOVED_FROM | inotify.IN_ATTRIB
_DEFAULT_RULES = frozenset(lxcconf.DEVICE_RULES)


PASSED = ("usb", "gpu")  # types passing host nodes they find, not one they are told


def is_unix(config):
    """A device made of nodes in the container: unix-char/unix-block, usb or gpu."""
    return bool(config) and (config.get("type") in unix.KINDS or config.get("type") in PASSED)


def _hex(text):
    # Hex: a device name or path may hold characters a file name should not.
    return text.encode().hex()


def _node_config(config, node):
    """The unix-char device one passed node is: its path, numbers, the device's owner and mode."""
    made = {"type": "unix-char", "path": node.path, "major": str(node.major), "minor": str(node.minor)}
    made.update({k: config[k] for k in ("uid", "gid", "mode") if config.get(k)})
    return made


class UnixDevices:
    """The unix devices of one daemon's containers."""

    log = Logger()

    def __init__(self, instances, sys_root="/sys", proc_root="/proc", dev_root="/dev"):
        self.instances = instances
        self.root = instances.daemon.path("devices")
        self.sys_root, self.proc_root, self.dev_root = sys_root, proc_root, dev_root
        self._wanted = {}  # container -> {device name: host source} of devices with required=false
        self._usb = {}  # container -> names of its usb devices (followed through uevents)
        self._dirs = set()
        self._notifier = None
        self._uevents = UeventListener(instances.daemon.reactor, self._uevent)

    # -- host nodes ---------------------------------------------------------
    def node_dir(self, name):
        return os.path.join(self.root, name)

    def host_node(self, name, file):
        return os.path.join(self.node_dir(name), file)

    @staticmethod
    def node_file(dev_name, config, path=None):
        """The host node's file name of a unix device, or of one node (at `path`) of a usb/gpu one."""
        if config["type"] in unix.KINDS:
            return f"unix.{_hex(dev_name)}"
        return f"{config['type']}.{_hex(dev_name)}.{_hex(path)}"

    def _plan(self, dev_name, config):
        """Blocking: [(host node file, unix-char style config)] of the nodes a device passes now."""
        kind = config["type"]
        if kind in unix.KINDS:
            return [(self.node_file(dev_name, config), config)]
        if kind == "usb":
            found = [u for u in usb.scan(os.path.join(self.sys_root, "bus", "usb", "devices"))
                     if usb.matches(config, u)]
            if not found and usb.is_required(config):
                raise errors.BadRequest(f"Missing USB device {config.get('vendorid')}:"
                                        f"{config.get('productid') or '*'} of device '{dev_name}'")
            nodes = [gpu.Node(u.path, u.major, u.minor) for u in found]
        else:
            nodes = gpu.nodes_for(config, gpu.scan(os.path.join(self.sys_root, "class", "drm"),
                                                   os.path.join(self.proc_root, "driver", "nvidia", "gpus")),
                                  self.dev_root)
            if nodes is None:
                raise errors.BadRequest(f"Failed to detect the requested GPU of device '{dev_name}'")
        return [(self.node_file(dev_name, config, n.path), _node_config(config, n)) for n in nodes]

    def _plugged(self, name, dev_name, config):
        """Blocking: [(host node file, path inside)] of a device's plugged nodes."""
        if config["type"] in unix.KINDS:
            file = self.node_file(dev_name, config)
            present = os.path.lexists(self.host_node(name, file))
            return [(file, unix.container_path(config))] if present else []
        prefix = f"{config['type']}.{_hex(dev_name)}."
        try:
            files = sorted(os.listdir(self.node_dir(name)))
        except OSError:
            return []
        found = []
        for file in files:
            if file.startswith(prefix):
                try:
                    found.append((file, bytes.fromhex(file[len(prefix):]).decode()))
                except ValueError:
                    continue
        return found

    def _make(self, name, file, dev_name, config, idmap):
        """Blocking: make the host node `file` of a device (`config` a unix-char/unix-block one);
        (Node, host path), or None when it is not required and its source is missing. A
        required one missing is an error."""
        source = unix.source_path(config)
        try:
            found = os.stat(source)
        except (OSError, ValueError):
            found = None
        try:
            node = unix.node_of(config, found)
        except unix.MissingSource:
            if not unix.is_required(config):
                return None
            kind = "character" if config["type"] == "unix-char" else "block"
            raise errors.BadRequest(f"Missing source '{source}' of device '{dev_name}': "
                                    f"no {kind} device there, and no \"major\" and \"minor\" given")
        uid = idmap.host_uid(node.uid) if idmap else node.uid
        gid = idmap.host_gid(node.gid) if idmap else node.gid
        if uid is None or gid is None:
            raise errors.BadRequest(f"The uid/gid of device '{dev_name}' is not mapped in the container")
        root_uid = (idmap.host_uid(0) if idmap else 0) or 0
        directory = self.node_dir(name)
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        # Only root and the container's root (liblxc mounts as it) pass: the node's mode
        # is the container's choice and must not open it to host users.
        os.chown(directory, root_uid, 0)
        os.chmod(directory, 0o100)
        path = self.host_node(name, file)
        if os.path.lexists(path):
            os.unlink(path)
        kind = stat.S_IFCHR if node.kind == "c" else stat.S_IFBLK
        os.mknod(path, kind | 0o600, os.makedev(node.major, node.minor))
        os.chown(path, uid, gid)
        os.chmod(path, node.mode)
        return node, path

    def _rule_of(self, name, file):
        """Blocking: the cgroup rule of a plugged host node, or None if not plugged."""
        try:
            st = os.lstat(self.host_node(name, file))
        except OSError:
            return None
        kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
        return f"{kind} {os.major(st.st_rdev)}:{os.minor(st.st_rdev)} rwm"

    def _rules_in_use(self, name):
        """Blocking: the cgroup rules of every node still plugged into the container."""
        try:
            files = os.listdir(self.node_dir(name))
        except OSError:
            return set()
        return {self._rule_of(name, f) for f in files} - {None}

    def _clear(self, name):
        shutil.rmtree(self.node_dir(name), ignore_errors=True)

    # -- start and stop -------------------------------------------------------
    async def start_lines(self, name, devices, idmap):
        """liblxc lines (bind mounts, device rules) of the unix devices of a container about to start."""
        await threads.deferToThread(self._clear, name)
        try:
            return await self._start_lines(name, devices, idmap)
        except BaseException:
            await threads.deferToThread(self._clear, name)  # no node left for a start that fails here
            raise

    async def _start_lines(self, name, devices, idmap):
        layout = self.instances.layout
        lines = []
        taken = {}
        for dev_name in sorted(devices):
            config = devices[dev_name]
            if not is_unix(config):
                continue
            for file, node_config in await threads.deferToThread(self._plan, dev_name, config):
                _claim(taken, dev_name, unix.container_path(node_config))
                made = await threads.deferToThread(self._make, name, file, dev_name, node_config, idmap)
                if made is None:
                    continue
                node, host_path = made
                if layout.has("devices"):
                    lines.append((layout.config_key("devices.allow"), node.cgroup_rule()))
                target = unix.container_path(node_config).lstrip("/")
                lines.append(("lxc.mount.entry",
                              f"{disk._escape(host_path)} {disk._escape(target)} none bind,create=file 0 0"))
        return lines

    async def stopped(self, name):
        """The container stopped (or goes away): forget its nodes and watches."""
        self.unwatch(name)
        await threads.deferToThread(self._clear, name)

    # -- live ----------------------------------------------------------------
    async def hot_add(self, name, pid, dev_name, config, idmap, devices):
        """Plug one device into a running container (nothing when optional and missing);
        `devices`: the container's devices, whose plugged nodes keep their paths."""
        plan = await threads.deferToThread(self._plan, dev_name, config)
        taken = await threads.deferToThread(self._taken, name, devices, dev_name)
        for _, node_config in plan:
            _claim(taken, dev_name, unix.container_path(node_config))
        for file, node_config in plan:
            await self._plug(name, pid, file, dev_name, node_config, idmap)

    def _taken(self, name, devices, but=None):
        """Blocking: {path inside: device name} of the nodes plugged for devices other than `but`."""
        taken = {}
        for dev_name, config in devices.items():
            if dev_name != but and is_unix(config):
                for _, path in self._plugged(name, dev_name, config):
                    taken[os.path.normpath(path)] = dev_name
        return taken

    async def _plug(self, name, pid, file, dev_name, config, idmap):
        """Make one host node and move it in at its path; allow it in the device cgroup."""
        made = await threads.deferToThread(self._make, name, file, dev_name, config, idmap)
        if made is None:
            return
        node, host_path = made
        try:
            if self.instances.layout.has("devices"):
                await self.instances.liblxc.set_cgroup(name, "devices.allow", node.cgroup_rule())
            await run([sys.executable, "-I", "-S", _MOUNTNS, "mount", str(pid), host_path,
                       unix.container_path(config), "propagation=private"])
        except (ProcessError, errors.ApiError) as e:
            await threads.deferToThread(_unlink, host_path)
            detail = e.stderr.decode("utf-8", "replace").strip() if isinstance(e, ProcessError) else e.message
            raise errors.InternalError(f"Failed to add device \"{dev_name}\": {detail}")

    async def hot_remove(self, name, pid, dev_name, config):
        """Unplug one device (each of its nodes) from a running container."""
        plugged = await threads.deferToThread(self._plugged, name, dev_name, config)
        await self._unplug(name, pid, dev_name, plugged)

    async def _unplug(self, name, pid, dev_name, plugged):
        """Take plugged nodes [(host node file, path inside)] out; revoke rules no node needs."""
        rules = set()
        for file, path in plugged:
            rule = await threads.deferToThread(self._rule_of, name, file)
            if rule is None:
                continue
            rules.add(rule)
            try:
                await run([sys.executable, "-I", "-S", _MOUNTNS, "umount", str(pid), path, "placeholder"])
            except ProcessError as e:
                self.log.warn("Unmounting device {dev} of {name}: {error}", dev=dev_name, name=name,
                              error=e.stderr.decode("utf-8", "replace").strip())
            await threads.deferToThread(_unlink, self.host_node(name, file))
        if not rules or not self.instances.layout.has("devices"):
            return
        # The numbers every container may use, or another plugged node's, stay allowed.
        still = await threads.deferToThread(self._rules_in_use, name)
        for rule in sorted(rules - still - _DEFAULT_RULES):
            try:
                await self.instances.liblxc.set_cgroup(name, "devices.deny", rule)
            except errors.ApiError as e:
                self.log.warn("Revoking {rule} of {name}: {error}", rule=rule, name=name, error=e.message)

    # -- hotplug ---------------------------------------------------------------
    def watch(self, name, devices):
        """Watch the sources of the running container's devices that are not required."""
        wanted = {dev: unix.source_path(c) for dev, c in devices.items()
                  if c.get("type") in unix.KINDS and not unix.is_required(c)}
        if wanted:
            self._wanted[name] = wanted
        else:
            self._wanted.pop(name, None)
        self._rewatch()
        usbs = {dev for dev, c in devices.items() if c.get("type") == "usb"}
        if usbs:
            self._usb[name] = usbs
        else:
            self._usb.pop(name, None)
        self._uevents.listen(bool(self._usb))

    def unwatch(self, name):
        if self._wanted.pop(name, None) is not None:
            self._rewatch()
        if self._usb.pop(name, None) is not None:
            self._uevents.listen(bool(self._usb))

    def _rewatch(self):
        dirs = {os.path.dirname(os.path.normpath(source)) for wanted in self._wanted.values()
                for source in wanted.values()}
        if dirs and self._notifier is None:
            self._notifier = inotify.INotify(self.instances.daemon.reactor)
            self._notifier.startReading()
        for directory in sorted(dirs - self._dirs):
            try:
                self._notifier.watch(FilePath(directory), mask=_MASK, callbacks=[self._event])
            except inotify.INotifyError as e:
                self.log.warn("Cannot watch {dir} for hotplug devices: {error}", dir=directory, error=e)
                continue
            self._dirs.add(directory)
        for directory in sorted(self._dirs - dirs):
            self._notifier.ignore(FilePath(directory))
            self._dirs.discard(directory)

    def _event(self, _watch, filepath, mask):
        path = os.fsdecode(filepath.path)
        for name, wanted in list(self._wanted.items()):
            for dev_name, source in wanted.items():
                if os.path.normpath(source) == path:
                    self._in_background(self._hotplug(name, dev_name), "Hotplug", name, dev_name)

    def _in_background(self, coroutine, what, name, dev_name):
        """Run a hotplug step on its own; a failure is logged, naming the device."""
        d = defer.Deferred.fromCoroutine(coroutine)
        d.addErrback(lambda f: self.log.failure("{what} of device {dev} of {name}", f, what=what,
                                                dev=dev_name, name=name))

    def _running_device(self, name, dev_name):
        """(init pid, expanded config, devices, the device) of the running container `name`;
        None when the container is gone or stopped, or has no such device."""
        instances = self.instances
        doc = instances.store.get(model.KIND, name)
        pid = instances.runtime.init_pid(name)
        if doc is None or pid is None:
            return None
        config, devices = instances.records.expanded(doc.value)
        device = devices.get(dev_name)
        return (pid, config, devices, device) if device else None

    async def _hotplug(self, name, dev_name):
        """Bring one watched device in line with its host source: plugged while it exists."""
        instances = self.instances
        async with instances.locks.hold(name, "hotplug"):
            found = self._running_device(name, dev_name)
            if found is None:
                return
            pid, config, devices, device = found
            if device.get("type") not in unix.KINDS or unix.is_required(device):
                return
            present = await threads.deferToThread(os.path.exists, unix.source_path(device))
            plugged = await threads.deferToThread(self._plugged, name, dev_name, device)
            if present and not plugged:
                await self.hot_add(name, pid, dev_name, device, instances.current_idmap(config), devices)
            elif not present and plugged:
                await self._unplug(name, pid, dev_name, plugged)

    def _uevent(self, action, found):
        """A host USB device came or went: plug or unplug it where a usb device selects it."""
        for name, dev_names in list(self._usb.items()):
            for dev_name in sorted(dev_names):
                self._in_background(self._usb_changed(name, dev_name, action, found), "USB hotplug", name,
                                    dev_name)

    async def _usb_changed(self, name, dev_name, action, found):
        instances = self.instances
        async with instances.locks.hold(name, "hotplug"):
            running = self._running_device(name, dev_name)
            if running is None:
                return
            pid, config, devices, device = running
            if device.get("type") != "usb":
                return
            file = self.node_file(dev_name, device, found.path)
            plugged = await threads.deferToThread(os.path.lexists, self.host_node(name, file))
            if action == "add" and usb.matches(device, found) and not plugged:
                holder = (await threads.deferToThread(self._taken, name, devices, dev_name)).get(found.path)
                if holder is not None:
                    self.log.warn("USB device {path} not plugged as {dev} of {name}: device {holder} has "
                                  "that path", path=found.path, dev=dev_name, name=name, holder=holder)
                    return
                node = gpu.Node(found.path, found.major, found.minor)
                await self._plug(name, pid, file, dev_name, _node_config(device, node),
                                 instances.current_idmap(config))
            elif action == "remove" and plugged:
                await self._unplug(name, pid, dev_name, [(file, found.path)])


def _claim(taken, dev_name, path):
    """Record that `dev_name` puts a node at `path`; two devices at one path are refused."""
    path = os.path.normpath(path)
    holder = taken.setdefault(path, dev_name)
    if holder != dev_name:
        raise errors.BadRequest(f"More than one device uses the same path: {path} (devices '{holder}' "
                                f"and '{dev_name}')")


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
