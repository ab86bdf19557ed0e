# -*- test-case-name: tests.unit.test_storage_drivers -*-
"""The `ceph` driver (`storage_driver_ceph`): an RBD image with a filesystem per volume.

The OSD pool is `ceph.osd.pool_name` (default: the pool name) of cluster
`ceph.cluster_name` (default `ceph`), reached as `client.<ceph.user.name>`
(default `admin`). A new OSD pool gets `ceph.osd.pg_num` placement groups; an
existing one is refused unless `ceph.osd.force_reuse` (it may belong to another
server). `volatile.pool.pristine` remembers whether we made the OSD pool, so
deleting the storage pool removes it only then.

RBD image names follow LXD: `container_<name>`, `image_<fp>`, `custom_<name>`;
snapshots are `@snapshot_<name>`. Images are unpacked once, snapshotted
`@readonly` and protected; containers are clones. Copies inside the pool are
clones too (`ceph.rbd.clone_copy`, default) or full `rbd cp` copies. Volumes
are mapped (`rbd map`) and mounted while in use.
"""

import json
import os
import secrets

from lxdtx import errors
from lxdtx.config.types import is_any, is_bool, is_size, is_true, is_uint32, parse_size
from lxdtx.storage import block, mounts
from lxdtx.storage.driver import Driver, Info, is_snapshot, tool_output

_PREFIX = {"container": "container", "image": "image", "custom": "custom"}


class CephDriver(block.BlockVolumes, Driver):
    """RBD images in one OSD pool of a Ceph cluster."""

    info = Info("ceph", optimized_images=True, remote=True, block_backing=True, fast_snapshots=True,
                fast_copies=True, quotas=True, restore_latest_only=False)
    keys = {"ceph.cluster_name": is_any, "ceph.osd.force_reuse": is_bool, "ceph.osd.pg_num": is_uint32,
            "ceph.osd.pool_name": is_any, "ceph.rbd.clone_copy": is_bool, "ceph.user.name": is_any,
            "volatile.pool.pristine": is_bool, "volume.size": is_size, **block.POOL_KEYS}
    changeable = frozenset({"volume.block.filesystem", "volume.block.mount_options", "volume.size"})
    volume_keys = {"size": is_size, **block.VOLUME_KEYS}
    volume_changeable = frozenset({"block.mount_options", "size"})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._mapped = {}  # rbd image spec -> /dev/rbdN

    @classmethod
    def missing(cls):
        if not os.path.isdir("/sys/bus/rbd"):
            return f"the kernel has no rbd block driver (/sys/bus/rbd is missing; {mounts.module_note('rbd')})"
        for tool in ("ceph", "rbd"):
            if mounts.which(tool) is None:
                return f"{tool} is not installed (ceph-common)"
        return None

    @classmethod
    async def version(cls, run):
        words = (await tool_output(run, ["ceph", "--version"])).split()
        return words[2] if len(words) > 2 else ""

    # -- names -----------------------------------------------------------------------
    @property
    def cluster(self):
        return self.config.get("ceph.cluster_name") or "ceph"

    @property
    def user(self):
        return self.config.get("ceph.user.name") or "admin"

    @property
    def osd_pool(self):
        return self.config.get("ceph.osd.pool_name") or self.pool

    def _client(self):
        return ["--name", f"client.{self.user}", "--cluster", self.cluster]

    def ceph(self, *args):
        return ["ceph", *self._client(), *args]

    def rbd(self, *args):
        return ["rbd", *self._client(), *args]

    def image(self, vol_type, name):
        """`<osd pool>/<image>[@snapshot_<snap>]` of a volume."""
        if vol_type == "container" and is_snapshot(name):
            container, snapshot = name.split("/", 1)
            return f"{self.osd_pool}/container_{container}@snapshot_{snapshot}"
        return f"{self.osd_pool}/{_PREFIX[vol_type]}_{name}"

    def device_path(self, vol_type, name):
        return self._mapped.get(self.image(vol_type, name)) or f"/dev/rbd/{self.image(vol_type, name)}"

    # -- pool ------------------------------------------------------------------------
    def fill_defaults(self, config):
        config = super().fill_defaults(config)
        if config.get("size"):
            raise errors.BadRequest("the key size cannot be used with CEPH storage pools")
        config.setdefault("ceph.cluster_name", "ceph")
        config.setdefault("ceph.user.name", "admin")
        config.setdefault("ceph.osd.pg_num", "32")
        pool_name = config.get("ceph.osd.pool_name") or config.get("source") or self.pool
        config["ceph.osd.pool_name"] = pool_name
        config.setdefault("source", pool_name)
        return config

    async def _osd_pool_exists(self):
        code, _, _ = await self.run(self.ceph("osd", "pool", "get", self.osd_pool, "size"), check=False)
        return code == 0

    def create_argvs(self, exists):
        argvs = []
        if not exists:
            argvs.append(self.ceph("osd", "pool", "create", self.osd_pool, self.config.get("ceph.osd.pg_num") or "32"))
            argvs.append(self.rbd("pool", "init", self.osd_pool))
        # A placeholder image marks the OSD pool as used by this server.
        argvs.append(self.rbd("create", "--image-feature", "layering", "--size", "0B",
                              f"{self.osd_pool}/lxd_{self.osd_pool}"))
        return argvs

    async def create(self):
        exists = await self._osd_pool_exists()
        if exists and not is_true(self.config.get("ceph.osd.force_reuse", "")):
            raise errors.BadRequest(f"OSD storage pool \"{self.osd_pool}\" already exists in cluster "
                                    f"\"{self.cluster}\"; set ceph.osd.force_reuse=true to use it anyway")
        # Recorded in the config the backend stores (the dict is the one it keeps).
        self.config["volatile.pool.pristine"] = "false" if exists else "true"
        try:
            for argv in self.create_argvs(exists):
                await self.run(argv)
            await self.in_thread(os.makedirs, self.mount_point, 0o711, True)
        except BaseException:
            if not exists:
                await self.run(self.ceph("osd", "pool", "delete", self.osd_pool, self.osd_pool,
                                         "--yes-i-really-really-mean-it"), check=False)
            raise

    async def delete(self):
        await self.run(self.rbd("rm", f"{self.osd_pool}/lxd_{self.osd_pool}"), check=False)
        if is_true(self.config.get("volatile.pool.pristine", "")):
            await self.run(self.ceph("osd", "pool", "delete", self.osd_pool, self.osd_pool,
                                     "--yes-i-really-really-mean-it"))

    async def usage(self):
        _, out, _ = await self.run(self.ceph("df", "--format", "json"))
        for pool in json.loads(out).get("pools", []):
            if pool.get("name") == self.osd_pool:
                stats = pool.get("stats", {})
                used = int(stats.get("bytes_used", 0))
                return {"space": {"used": used, "total": used + int(stats.get("max_avail", 0))},
                        "inodes": {"used": 0, "total": 0}}
        raise errors.NotFound(f"OSD pool \"{self.osd_pool}\" not found")

    # -- mapping -----------------------------------------------------------------------
    async def map(self, vol_type, name):
        spec = self.image(vol_type, name)
        if spec in self._mapped:
            return self._mapped[spec]
        argv = self.rbd("map", spec) + (["--read-only"] if "@" in spec else [])
        _, out, _ = await self.run(argv)
        device = out.decode().strip()
        self._mapped[spec] = device
        return device

    async def unmap(self, vol_type, name):
        spec = self.image(vol_type, name)
        device = self._mapped.pop(spec, None)
        await self.run(self.rbd("unmap", device or spec), check=False)

    async def mount_volume(self, vol_type, name):
        await self.map(vol_type, name)
        return await self.mount_block(vol_type, name, readonly=vol_type == "container" and is_snapshot(name))

    async def unmount_volume(self, vol_type, name):
        changed = await self.unmount_block(vol_type, name)
        await self.unmap(vol_type, name)
        return changed

    # -- volumes -----------------------------------------------------------------------
    def create_image_argv(self, vol_type, name, size_bytes):
        return self.rbd("create", "--image-feature", "layering", "--size", f"{max(1, size_bytes >> 20)}M",
                        self.image(vol_type, name))

    async def create_volume(self, vol_type, name, config):
        await self.run(self.create_image_argv(vol_type, name, self.volume_size(config)))
        try:
            await self.map(vol_type, name)
            await self.format_block(vol_type, name, config)
            await self.mount_block(vol_type, name)
        except BaseException:
            await self.delete_volume(vol_type, name)
            raise
        return self.mount_path(vol_type, name)

    async def _exists(self, spec):
        code, _, _ = await self.run(self.rbd("info", spec), check=False)
        return code == 0

    async def ensure_image(self, fingerprint, unpack):
        spec = self.image("image", fingerprint)
        if await self._exists(f"{spec}@readonly"):
            return
        if await self._exists(spec):
            await self.delete_volume("image", fingerprint)
        await self.create_volume("image", fingerprint, {})
        try:
            await unpack(self.mount_path("image", fingerprint))
            await self.unmount_volume("image", fingerprint)
            await self.run(self.rbd("snap", "create", f"{spec}@readonly"))
            await self.run(self.rbd("snap", "protect", f"{spec}@readonly"))
        except BaseException:
            await self.delete_volume("image", fingerprint)
            raise

    async def create_from_image(self, name, fingerprint, unpack, config):
        await self.ensure_image(fingerprint, unpack)
        await self.run(self.rbd("clone", f"{self.image('image', fingerprint)}@readonly",
                                self.image("container", name)))
        try:
            await self.map("container", name)
            await self.new_uuid("container", name)
            await self.mount_block("container", name)
        except BaseException:
            await self.delete_volume("container", name)
            raise
        return self.mount_path("container", name)

    async def delete_volume(self, vol_type, name):
        await self.unmount_volume(vol_type, name)
        spec = self.image(vol_type, name)
        if await self._exists(spec):
            if "@" in spec:
                await self.run(self.rbd("snap", "unprotect", spec), check=False)
                code, _, _ = await self.run(self.rbd("snap", "rm", spec), check=False)
                if code != 0:
                    # Clones depend on it: keep it under a name no listing shows.
                    hidden = spec.replace("@snapshot_", "@zombie_snapshot_") + "_" + secrets.token_hex(4)
                    await self.run(self.rbd("snap", "rename", spec, hidden))
            else:
                await self.run(self.rbd("snap", "purge", spec), check=False)
                code, _, _ = await self.run(self.rbd("rm", spec), check=False)
                if code != 0:
                    pool, image = spec.split("/", 1)
                    await self.run(self.rbd("mv", spec, f"{pool}/zombie_{image}_{secrets.token_hex(4)}"))
        await self.in_thread(mounts.rmdir_if_empty, self.mount_path(vol_type, name))
        if vol_type == "container":
            await self.in_thread(mounts.rmdir_if_empty, self.snapshots_dir(name.split("/")[0]))

    async def rename_volume(self, vol_type, name, new_name):
        await self.unmount_volume(vol_type, name)
        old, new = self.image(vol_type, name), self.image(vol_type, new_name)
        if "@" in old:
            await self.run(self.rbd("snap", "rename", old, new))
        else:
            await self.run(self.rbd("mv", old, new))
            await self.in_thread(mounts.rmdir_if_empty, self.mount_path(vol_type, name))
            if vol_type == "container":
                await self.in_thread(mounts.rename_dir, self.snapshots_dir(name), self.snapshots_dir(new_name))
            await self.mount_volume(vol_type, new_name)

    async def create_snapshot(self, name, snapshot):
        await self.run(self.rbd("snap", "create", self.image("container", f"{name}/{snapshot}")))

    async def restore_snapshot(self, name, snapshot):
        await self.unmount_volume("container", name)
        spec = self.image("container", name)
        await self.run(self.rbd("snap", "rollback", "--snap", f"snapshot_{snapshot}", spec))
        await self.mount_volume("container", name)

    async def copy_volume(self, vol_type, name, new_name, config=None):
        source, target = self.image(vol_type, name), self.image(vol_type, new_name)
        if "@" in target:
            return await super().copy_volume(vol_type, name, new_name, config)
        clone = self.config.get("ceph.rbd.clone_copy", "") == "" or is_true(self.config["ceph.rbd.clone_copy"])
        if clone:
            origin = source if "@" in source else f"{source}@copy_{secrets.token_hex(8)}"
            if "@" not in source:
                await self.run(self.rbd("snap", "create", origin))
            await self.run(self.rbd("snap", "protect", origin), check=False)
            await self.run(self.rbd("clone", origin, target))
        else:
            await self.run(self.rbd("cp", source, target))
        try:
            await self.map(vol_type, new_name)
            await self.new_uuid(vol_type, new_name)
            if (config or {}).get("size"):
                await self.set_quota(vol_type, new_name, config["size"])
            await self.mount_block(vol_type, new_name)
        except BaseException:
            await self.delete_volume(vol_type, new_name)
            raise

    async def image_volumes(self):
        _, out, _ = await self.run(self.rbd("ls", self.osd_pool), check=False)
        return sorted(n[len("image_"):] for n in out.decode().split() if n.startswith("image_"))

    async def delete_image(self, fingerprint):
        await self.delete_volume("image", fingerprint)

    # -- sizes -------------------------------------------------------------------------
    async def set_quota(self, vol_type, name, size):
        number = parse_size(size) if size else 0
        if number == 0:
            return
        spec = self.image(vol_type, name)
        _, out, _ = await self.run(self.rbd("info", "--format", "json", spec))
        current = int(json.loads(out).get("size", 0))
        if number == current:
            return
        device = await self.map(vol_type, name)
        path = self.mount_path(vol_type, name)
        filesystem = await self.detect_filesystem(device)
        megabytes = f"{max(1, number >> 20)}M"
        if number > current:
            await self.run(self.rbd("resize", "--size", megabytes, spec))
            await self.run(block.grow_argv(filesystem, device, path))
            return
        steps = block.shrink_steps(filesystem, device, path, number)
        was_mounted = await self.unmount_block(vol_type, name) if filesystem == "ext4" else False
        for argv in steps:
            await self.run(argv)
        await self.run(self.rbd("resize", "--allow-shrink", "--size", megabytes, spec))
        if was_mounted:
            await self.mount_block(vol_type, name)
