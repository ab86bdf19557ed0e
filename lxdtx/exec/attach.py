# -*- test-case-name: tests.unit.test_exec_attach -*-
"""Running a command in a container through liblxc's `lxc-attach` helper.

`lxc-attach` joins the container's namespaces in a transient child and starts
the command with CLONE_PARENT, so the command is a direct child of the helper
(and the only one living inside the container's pid namespace). The helper
exits with the command's status (128+n when a signal n killed it) but forwards
no signals when its stdin is not a terminal: signals are sent to the command
itself, found among the helper's children. The working directory inside the
container is the helper's own working directory when that path exists there.
"""

import errno
import fcntl
import os
import shutil
import struct
import termios

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Absolute paths spare a PATH search on every exec.
ATTACH = shutil.which("lxc-attach") or "lxc-attach"
ENV = shutil.which("env") or "env"


def environment(config, requested, interactive, has_snap=False):
    """The command's environment: container `environment.*` keys, the request's, LXD's defaults.

    `has_snap` None: PATH, when nobody set it, is left to the exec seed, which
    applies the same rule inside the container.
    """
    env = {}
    for key, value in config.items():
        if key.startswith("environment."):
            env[key[len("environment."):]] = value
    env.update(requested or {})
    if has_snap is not None:
        env.setdefault("PATH", DEFAULT_PATH + (":/snap/bin" if has_snap else ""))
    env.setdefault("HOME", "/root")
    env.setdefault("USER", "root")
    env.setdefault("LANG", "C.UTF-8")
    if interactive:
        env.setdefault("TERM", "xterm")
    return env


def argv(name, lxcpath, command, env, cwd="/"):
    """The command line running `command` with exactly `env`, starting in `cwd` inside.

    `env -C` sets the helper's directory: the daemon can then start it with
    posix_spawn, where a working directory of its own would cost a fork of the
    whole daemon.
    """
    line = [ENV, "-C", cwd, ATTACH, "-n", name, "-P", lxcpath, "--clear-env"]
    for key, value in env.items():
        line += ["-v", f"{key}={value}"]
    return line + ["--", *command]


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _in_child_namespace(pid):
    """Whether `pid` lives in a pid namespace below ours (NSpid lists several ids)."""
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith(b"NSpid:"):
            return len(line.split()) > 2
    return False


def attached_pid(helper_pid):
    """The host pid of the command started by the `lxc-attach` helper `helper_pid`, or None.

    The command is the helper's child that lives inside the container's pid
    namespace (the transient attaching child does not). While the helper has not
    reaped it, that pid cannot be reused, so signalling it is safe.
    """
    children = _read(f"/proc/{helper_pid}/task/{helper_pid}/children").split()
    for child in children:
        pid = int(child)
        if _in_child_namespace(pid):
            return pid
    return None


def send_signal(helper_pid, signum):
    """Deliver `signum` to the attached command; False when it is not there (yet or any more)."""
    pid = attached_pid(helper_pid)
    if pid is None:
        return False
    try:
        os.kill(pid, signum)
    except OSError as e:
        if e.errno == errno.ESRCH:
            return False
        raise
    return True


def set_window_size(fd, width, height):
    """Set a pty's size (the helper's terminal proxy passes it on with SIGWINCH)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def window_size(fd):
    """(width, height) of a pty."""
    height, width, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8)))
    return width, height


def working_directory(home):
    """Where to start the helper so the command starts in `home` (falls back to `/`)."""
    if home.startswith("/") and os.path.isdir(home):
        return home
    return "/"
