# -*- test-case-name: tests.integration.test_hostile_images -*-
"""Extract a stored image into a directory: `metadata.yaml`, `templates/`, `rootfs/`.

GNU tar (or unsquashfs for a squashfs rootfs) does the work in a child process,
but only on a tarball that `formats.check_tarball` passed just before, against
the free space where it lands; after each extraction the top of the tree is
looked at again (lstat, no link followed) to be what was checked. Backup import
extracts through the same `extract_tarball`.
"""

import os
import shutil
import stat

from twisted.internet import threads

from lxdtx import fsutil
from lxdtx.asyncutil import run
from lxdtx.image import formats
from lxdtx.image.invalid import ImageFormatError

# (path, kind, required) an unpacked image's directory must have, parents first.
IMAGE_TOP = (("rootfs", "dir", True), ("metadata.yaml", "file", True), ("templates", "dir", False))

_KINDS = {"dir": (stat.S_ISDIR, "a directory"), "file": (stat.S_ISREG, "a regular file")}


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


def free_bytes(path):
    """Bytes still free for ordinary writers on the file system holding `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def free_inodes(path):
    """Inodes still free for ordinary writers where `path` lies; None where the file system
    has no fixed count (btrfs reports none)."""
    st = os.statvfs(path)
    return st.f_favail if st.f_files else None


def check(path, fmt, layout, target):
    """`formats.check_tarball` of `path` for extraction into `target` (blocking)."""
    return formats.check_tarball(path, fmt, layout, free_space=free_bytes(target), free_inodes=free_inodes(target))


async def extract_tarball(path, fmt, target, layout, *, privileged):
    """Check the tarball `path` against `layout`, then extract it into `target` with GNU tar."""
    await threads.deferToThread(check, path, fmt, layout, target)
    await run(tar_extract_argv(path, fmt, target, privileged=privileged))


def expect_layout(dir_fd, entries, what):
    """lstat each (path, kind, required) of `entries` below the directory `dir_fd`.

    Parents come first, so each path is reached through directories already seen
    to be real ones. ImageFormatError unless each is what `kind` says (or absent
    when not required).
    """
    for path, kind, required in entries:
        parent, _, leaf = path.rpartition("/")
        try:
            parent_fd = fsutil.open_beneath(dir_fd, parent or ".", os.O_PATH | os.O_DIRECTORY)
        except OSError as e:
            raise ImageFormatError(f"Invalid {what}: {parent!r} is not a directory ({e.strerror})")
        try:
            st = os.stat(leaf, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            if required:
                raise ImageFormatError(f"Invalid {what}: {path!r} is missing")
            continue
        finally:
            os.close(parent_fd)
        is_kind, name = _KINDS[kind]
        if not is_kind(st.st_mode):
            found = "a symlink" if stat.S_ISLNK(st.st_mode) else f"not {name}"
            raise ImageFormatError(f"Invalid {what}: {path!r} is {found} after extraction")


def _expect(target, entries, what="image tarball"):
    fd = os.open(target, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        expect_layout(fd, entries, what)
    finally:
        os.close(fd)


def read_beneath(dir_fd, path, limit=formats.MAX_METADATA_SIZE):
    """The bytes of the regular file `path` below `dir_fd`, reached through no symlink.

    For files image or backup content shaped (metadata.yaml, templates, backup.yaml):
    a link, fifo or device there is never opened for reading, and more than
    `limit` bytes is refused. FileNotFoundError when absent; ImageFormatError
    (without a prefix: the caller says what it was reading) otherwise.
    """
    pinned = fsutil.open_beneath(dir_fd, path, os.O_PATH | os.O_NOFOLLOW)
    try:
        mode = os.fstat(pinned).st_mode
        if not stat.S_ISREG(mode):
            raise ImageFormatError(f"{path} is {'a symlink' if stat.S_ISLNK(mode) else 'not a regular file'}")
        fd = fsutil.reopen(pinned, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    finally:
        os.close(pinned)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ImageFormatError(f"{path} is larger than {limit} bytes")
    return data


async def _extract(path, fmt, target, layout, privileged):
    if fmt.is_tarball:
        await extract_tarball(path, fmt, target, layout, privileged=privileged)
        return
    if shutil.which("unsquashfs") is None:
        raise RuntimeError("unsquashfs not found: install squashfs-tools to use squashfs images")
    await run(unsquashfs_argv(path, target, privileged=privileged))


def _prepare(target):
    created = not os.path.exists(target)
    os.makedirs(os.path.join(target, "rootfs"), mode=0o755, exist_ok=True)
    return created


def _finish(target):
    _expect(target, IMAGE_TOP)
    fd = os.open(target, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.mkdir("templates", 0o755, dir_fd=fd)
    except FileExistsError:
        pass  # a real directory: _expect saw it
    finally:
        os.close(fd)


async def unpack(image_path, image_format, rootfs_path, rootfs_format, target, *, privileged):
    """Extract a unified image (`rootfs_path` None) or a split one into `target`.

    On failure `target` is removed again if this call created it.
    """
    created = await threads.deferToThread(_prepare, target)
    try:
        await _extract(image_path, image_format, target, formats.IMAGE, privileged)
        if rootfs_path is not None:
            # The metadata tarball must not have turned rootfs into a way out first.
            await threads.deferToThread(_expect, target, IMAGE_TOP[:1])
            await _extract(rootfs_path, rootfs_format, os.path.join(target, "rootfs"), formats.ROOTFS,
                           privileged)
        await threads.deferToThread(_finish, target)
    except BaseException:
        if created:
            await threads.deferToThread(shutil.rmtree, target, True)
        raise
