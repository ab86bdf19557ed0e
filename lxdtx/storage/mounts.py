# -*- test-case-name: tests.unit.test_storage_drivers,tests.integration.test_storage -*-
"""Mount table look-ups, loop files and filesystem helpers shared by the drivers (blocking)."""

import os
import stat

# Default size of a pool's loop file: 20% of the free space, clamped to 15-100 GB.
_GB = 1 << 30


def _unescape(field):
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mount_points(mountinfo="/proc/self/mountinfo"):
    """{mount point: (fs type, source)} of the mount table."""
    found = {}
    with open(mountinfo) as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            rest = right.split()
            if len(fields) >= 5 and len(rest) >= 2:
                found[_unescape(fields[4])] = (rest[0], _unescape(rest[1]))
    return found


def is_mounted(path, mountinfo="/proc/self/mountinfo"):
    return os.path.realpath(path) in mount_points(mountinfo)


def is_block_device(path):
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def filesystem_type(path):
    """The filesystem type name of the mount holding `path` (longest mount prefix)."""
    real = os.path.realpath(path)
    best, kind = "", ""
    for point, (fstype, _) in mount_points().items():
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fstype
    return kind


def default_loop_size(directory):
    """LXD's default loop file size for a pool whose file lives in `directory`, as "<n>GB"."""
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    size = min(max(free // 5 // _GB, 15), 100)
    return f"{size}GB"


def make_sparse_file(path, size):
    """Create `path` of `size` bytes without allocating blocks; refuse to overwrite."""
    os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def remove_file(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def kernel_has_filesystem(name, filesystems="/proc/filesystems"):
    try:
        with open(filesystems) as f:
            return any(line.split()[-1] == name for line in f if line.strip())
    except OSError:
        return False


def kernel_has_misc_device(name, misc="/proc/misc"):
    try:
        with open(misc) as f:
            return any(line.split()[-1] == name for line in f if line.strip())
    except OSError:
        return False


def module_note(module, modules_root="/lib/modules"):
    """Why loading a kernel module would not help (or that it would), for missing-feature messages."""
    release = os.uname().release
    deps = os.path.join(modules_root, release, "modules.dep")
    try:
        with open(deps) as f:
            found = any(f"/{module}.ko" in line.split(":", 1)[0] for line in f)
    except OSError:
        return f"no {module} module either: {modules_root}/{release} does not exist"
    if found:
        return f"the {module} module exists but is not loaded: run `modprobe {module}`"
    return f"no {module} module in {modules_root}/{release}"


def which(tool):
    for directory in os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(":") + ["/usr/sbin", "/sbin"]:
        path = os.path.join(directory, tool)
        if os.access(path, os.X_OK):
            return path
    return None


def rmdir_if_empty(path):
    """Remove a directory if it is empty (and exists); anything else is left alone."""
    try:
        os.rmdir(path)
    except OSError:
        pass


def rename_dir(old, new):
    """Rename a directory that may not exist."""
    if os.path.isdir(old):
        os.rename(old, new)
