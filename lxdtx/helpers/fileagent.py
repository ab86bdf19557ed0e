# -*- test-case-name: tests.integration.test_file_agent -*-
"""The file agent of one container: does the file API's work where the container's root would.

    python3 -I -S fileagent.py running NAME IDMAP          (fd 3: socket to the daemon, fd 4: the init's pidfd)
    python3 -I -S fileagent.py stopped NAME ROOTFS IDMAP   (fd 3: socket to the daemon)

NAME only tells `ps` readers whose agent it is.

Running: the agent joins the init's user, mount, uts, ipc, net and cgroup
namespaces (not its pid namespace: nothing inside can see or signal the
agent) and becomes root of the user namespace, so each open is checked by the
kernel with the container root's credentials: a host file bind-mounted in,
owned by an id the container does not map, cannot be written through a link
the container planted. Stopped: the agent stays on the host and works on the
rootfs directory, converting ids with the container's map. Either way
`lxdtx.instance.files` does the work, which refuses kernel file systems and
anything but regular files, directories and symlinks.

Each request is served by a fork of the agent, so one that blocks (a FUSE
mount that never answers) holds up neither the daemon nor the container's
other requests; the daemon cancels it by id and the agent kills that fork.
The agent exits when the daemon closes the socket or the init ends.

Messages are JSON objects, one SOCK_SEQPACKET datagram each, fds passed with
SCM_RIGHTS (see lxdtx/instance/fileagents.py for the daemon's side):
  daemon -> agent  {"id", "op": get|write|mkdir|symlink|delete, "path", ...}; write: the body's fd
                   {"id", "op": "probe", "pty": bool}: for an exec (see lxdtx/exec/terminal.py)
                   {"id", "op": "cancel"}
  agent -> daemon  {"ready": pid} once, then per request:
                   get: {"id", "kind", "uid", "gid", "mode", "size"} + a pipe carrying the
                        content (a file's bytes, a directory's names as JSON) or "target" (symlink)
                   write: {"id", "opened": true}, then {"id", "done": true}
                   probe: {"id", "has_snap", ["pty_error"]} + the pty's master and slave fds
                   others: {"id", "done": true};  any: {"id", "error": CODE, "message"}
"""

import array
import ctypes
import errno
import fcntl
import json
import os
import select
import signal
import socket
import sys

if __name__ == "__main__":
    # Isolated mode has no path to the package: take it from this file, before any
    # namespace is joined (afterwards paths resolve in the container).
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from lxdtx import errors
from lxdtx.exec import terminal
from lxdtx.fsutil import Root
from lxdtx.instance import files
from lxdtx.instance.idmap import IdMap

DAEMON_FD = 3
PIDFD = 4
MAX_MESSAGE = 64 * 1024
MAX_FDS = 4
# Forks serving at once; more requests are answered "busy" (the daemon queues below this).
MAX_FORKS = 64
PIPE_SIZE = 1024 * 1024
CHUNK = 1024 * 1024

CLONE_NEWUSER = 0x10000000
NAMESPACES = 0x00020000 | 0x04000000 | 0x08000000 | 0x40000000 | 0x02000000  # mnt uts ipc net cgroup
PR_SET_PDEATHSIG = 1
F_SETPIPE_SZ = 1031

_libc = ctypes.CDLL(None, use_errno=True)


def _fail(what):
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def join(pidfd):
    """Enter the namespaces of the process `pidfd` and become root of its user namespace."""
    if _libc.setns(pidfd, CLONE_NEWUSER | NAMESPACES) == 0:
        try:
            os.setgroups([])
        except PermissionError:
            pass  # the container denies setgroups: no supplementary groups to drop then
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        return
    if ctypes.get_errno() != errno.EINVAL:
        _fail("setns")
    # EINVAL: the init shares our user namespace (a privileged container).
    if _libc.setns(pidfd, NAMESPACES) != 0:
        _fail("setns")


def send(sock, message, fds=()):
    """One JSON datagram, with `fds` attached."""
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    sock.sendmsg([json.dumps(message).encode()], ancillary)


def receive(sock):
    """(message dict, fds) of one datagram; (None, []) at EOF."""
    fds = array.array("i")
    data, ancillary, _, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    fds = list(fds)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(data), fds


def _pipe():
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        fcntl.fcntl(write_end, F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # above the pipe-max-size sysctl: the default size is fine
    return read_end, write_end


def _splice_all(source, sink, size):
    """Move `size` bytes of regular file `source` into pipe `sink` (fewer if the file shrank)."""
    remaining = size
    while remaining > 0:
        try:
            moved = os.splice(source, sink, min(CHUNK, remaining))
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOSYS):
                raise
            chunk = os.read(source, min(CHUNK, remaining))
            moved = len(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(sink, view):]
        if moved == 0:
            return
        remaining -= moved


def _get(sock, container, request):
    entry = container.get(request["path"])
    head = {"id": request["id"], "kind": entry.kind, "uid": entry.uid, "gid": entry.gid,
            "mode": entry.mode, "size": entry.size}
    if entry.kind == "symlink":
        head["target"] = entry.target
        send(sock, head)
        return
    content = json.dumps(entry.names).encode() if entry.kind == "directory" else None
    if content is not None:
        head["size"] = len(content)
    read_end, write_end = _pipe()
    try:
        send(sock, head, [read_end])
        os.close(read_end)
        if content is not None:
            view = memoryview(content)
            while view:
                view = view[os.write(write_end, view):]
        else:
            _splice_all(entry.fd, write_end, entry.size)
    finally:
        os.close(write_end)
        if entry.fd >= 0:
            os.close(entry.fd)


def _write(sock, container, request, fds):
    if len(fds) != 1:
        raise errors.BadRequest("no request body")
    with open(fds[0], "rb", buffering=0) as body:
        container.write_file(request["path"], body, uid=request.get("uid"), gid=request.get("gid"),
                             mode=request.get("mode"), append=bool(request.get("append")),
                             opened=lambda: send(sock, {"id": request["id"], "opened": True}))


def _probe(sock, container, request):
    """What an exec needs from inside the container: whether it has /snap (LXD's PATH
    rule) and, when asked, a pty of its own devpts (master and slave fds)."""
    answer, fds = {"id": request["id"], "has_snap": False}, []
    with Root(container.root_path) as root:
        try:
            os.close(root.open("/snap", os.O_PATH | os.O_DIRECTORY))
            answer["has_snap"] = True
        except OSError:
            pass
        if request.get("pty"):
            try:
                fds = list(terminal.open_pty(root, proc_fd=container.proc_fd))
            except OSError as e:
                answer["pty_error"] = e.strerror or str(e)
    send(sock, answer, fds)


def serve(sock, container, request, fds):
    """One request, in a fork of the agent; the reply goes straight to the daemon."""
    op = request.get("op")
    try:
        if op == "get":
            _get(sock, container, request)
            return
        if op == "probe":
            if not container.ids.in_namespace:  # a stopped rootfs's devpts is not the container's
                raise errors.BadRequest("Container is not running.")
            _probe(sock, container, request)
            return
        if op == "write":
            _write(sock, container, request, fds)
        elif op == "mkdir":
            container.make_directory(request["path"], uid=request.get("uid"), gid=request.get("gid"),
                                     mode=request.get("mode"))
        elif op == "symlink":
            container.make_symlink(request["path"], request["target"], uid=request.get("uid"),
                                   gid=request.get("gid"))
        elif op == "delete":
            container.delete(request["path"])
        else:
            raise errors.BadRequest(f"unknown file operation {op!r}")
        send(sock, {"id": request["id"], "done": True})
    except errors.ApiError as e:
        send(sock, {"id": request["id"], "error": e.code, "message": e.message})
    except OSError as e:
        send(sock, {"id": request["id"], "error": 500, "message": os.strerror(e.errno or errno.EIO)})


class Agent:
    """The serving loop: a fork per request, reaped as they end."""

    def __init__(self, sock, container, init_pidfd=None):
        self.sock = sock
        self.container = container
        self.init_pidfd = init_pidfd
        self.forks = {}  # request id -> pid
        self.wake_read, self.wake_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def run(self):
        signal.set_wakeup_fd(self.wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        poller.register(self.wake_read, select.POLLIN)
        if self.init_pidfd is not None:
            poller.register(self.init_pidfd, select.POLLIN)
        try:
            send(self.sock, {"ready": os.getpid()})
            while True:
                for fd, _ in poller.poll():
                    if fd == self.wake_read:
                        self._drain_wakeups()
                    elif fd == self.init_pidfd:
                        return  # the container stopped
                    elif not self._take():
                        return  # the daemon is gone or done with us
                self._reap()
        except (BrokenPipeError, ConnectionResetError):
            return  # the daemon went away first
        finally:
            for pid in self.forks.values():
                _kill(pid)

    def _drain_wakeups(self):
        try:
            while os.read(self.wake_read, 64):
                pass
        except BlockingIOError:
            pass

    def _take(self):
        request, fds = receive(self.sock)
        if request is None:
            return False
        try:
            ident = request.get("id")
            if request.get("op") == "cancel":
                pid = self.forks.pop(ident, None)
                if pid is not None:
                    _kill(pid)
                return True
            if len(self.forks) >= MAX_FORKS:
                send(self.sock, {"id": ident, "error": 503,
                                  "message": "Too many file operations in progress in this container"})
                return True
            pid = os.fork()
            if pid == 0:
                self._child(request, fds)
            self.forks[ident] = pid
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def _child(self, request, fds):
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() == 1:
                os._exit(1)
            serve(self.sock, self.container, request, fds)
            code = 0
        except BaseException:
            pass
        finally:
            os._exit(code)

    def _reap(self):
        while self.forks:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.forks.clear()
                return
            if pid == 0:
                return
            for ident, known in list(self.forks.items()):
                if known == pid:
                    del self.forks[ident]


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main(argv):
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    sock = socket.socket(fileno=DAEMON_FD)
    try:
        mode = argv[1]
        if mode == "running":
            idmap = IdMap.from_json(argv[3])
            proc_fd = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            join(PIDFD)
            os.chdir("/")
            container = files.ContainerFiles("/", idmap, proc_fd=proc_fd, in_namespace=True)
            init_pidfd = PIDFD
        elif mode == "stopped":
            container = files.ContainerFiles(argv[3], IdMap.from_json(argv[4]))
            init_pidfd = None
        else:
            raise ValueError(f"unknown mode {mode!r}")
    except (OSError, ValueError, IndexError) as e:
        send(sock, {"failed": str(e)})
        return 1
    Agent(sock, container, init_pidfd).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
