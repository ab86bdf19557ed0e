# -*- test-case-name: tests.integration.test_state_permissions -*-
"""Who may enter the daemon's state directory: root, and container roots on their way
to their own rootfs; no other host user.

liblxc reaches an unprivileged container's rootfs and config as the container's root,
so the state directory, `lxc/`, `storage-pools/` and `containers/` stay traversable
(0711, as LXD's are); each container's volume is the gate instead (see
`guard_container_root`). `networks/` is traversable too: dnsmasq re-reads its hosts file
there after dropping to its own user. `devices/` is traversable too: liblxc binds a container's
unix device nodes from there as the container's root (each container's directory in it
is the gate, enterable by that root only). Everything else is root's alone: logs may carry secrets a
container printed, images hold unshifted rootfs trees with setuid files, and the
database holds the trust password's hash and every trusted certificate.
"""

import os

MODES = {
    "": 0o711,
    "lxc": 0o711,
    "storage-pools": 0o711,
    "containers": 0o711,
    "logs": 0o700,
    "images": 0o700,
    "networks": 0o711,
    "backups": 0o700,
    "devices": 0o711,
}
# Container volumes: only their owner may enter, and the owner is root until the
# container starts, then the container's own root (that liblxc runs as), as in LXD.
CONTAINER_ROOT_MODE = 0o100


def restrict(state_dir):
    """Create the top-level directories with their modes, and put back modes that drifted
    (an older daemon, an operator's chmod). Blocking: called at start-up."""
    for name, mode in MODES.items():
        path = os.path.join(state_dir, name)
        os.makedirs(path, mode=mode, exist_ok=True)
        os.chmod(path, mode)


def guard_container_root(path, owner=0):
    """Make a container volume's top directory enterable by `owner` (a host uid) only."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchown(fd, owner, 0)
        os.fchmod(fd, CONTAINER_ROOT_MODE)
    finally:
        os.close(fd)
