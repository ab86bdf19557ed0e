# -*- test-case-name: tests.integration.test_images -*-
"""Extract a stored image into a directory: `metadata.yaml`, `templates/`, `rootfs/`.

GNU tar (or unsquashfs for a squashfs rootfs) does the work in a child process.
Members were checked when the image was imported (no absolute paths, no `..`,
nothing below a symlink); tar itself also refuses `..` and strips leading `/`.
"""

import os
import shutil

from twisted.internet import threads

from lxdtx.asyncutil import run


def tar_extract_argv(path, fmt, target, *, privileged):
    """tar extracting the archive `path` of Format `fmt` into `target`."""
    argv = ["tar", "--numeric-owner"]
    if privileged:
        # Owners, modes, file capabilities and ACLs as the image has them.
        argv += ["--xattrs", "--xattrs-include=*", "--acls"]
    return [*argv, *fmt.tar_flags, "-C", target, "-xpf", path]


def unsquashfs_argv(path, target, *, privileged):
    """unsquashfs extracting the squashfs `path` into `target` (which may exist)."""
    argv = ["unsquashfs", "-f", "-n", "-d", target]
    if not privileged:
        argv.append("-no-xattrs")
    return [*argv, path]


async def _extract(path, fmt, target, privileged):
    if fmt.is_tarball:
        await run(tar_extract_argv(path, fmt, target, privileged=privileged))
        return
    if shutil.which("unsquashfs") is None:
        raise RuntimeError("unsquashfs not found: install squashfs-tools to use squashfs images")
    await run(unsquashfs_argv(path, target, privileged=privileged))


def _prepare(target):
    created = not os.path.exists(target)
    os.makedirs(os.path.join(target, "rootfs"), mode=0o755, exist_ok=True)
    return created


def _finish(target):
    os.makedirs(os.path.join(target, "templates"), mode=0o755, exist_ok=True)
    if not os.path.isfile(os.path.join(target, "metadata.yaml")):
        raise RuntimeError("image has no metadata.yaml")


async def unpack(image_path, image_format, rootfs_path, rootfs_format, target, *, privileged):
    """Extract a unified image (`rootfs_path` None) or a split one into `target`.

    On failure `target` is removed again if this call created it.
    """
    created = await threads.deferToThread(_prepare, target)
    try:
        await _extract(image_path, image_format, target, privileged)
        if rootfs_path is not None:
            await _extract(rootfs_path, rootfs_format, os.path.join(target, "rootfs"), privileged)
        await threads.deferToThread(_finish, target)
    except BaseException:
        if created:
            await threads.deferToThread(shutil.rmtree, target, True)
        raise
