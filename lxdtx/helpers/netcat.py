"""rsync's remote shell during a migration: `netcat.py SOCKET [rsync's remote command...]`.

rsync talks to its peer through this process's stdin and stdout; they are joined to
the daemon's unix socket SOCKET, which the daemon joins to the `fs` websocket. The
remote command rsync passes is ignored: the peer runs its own `rsync --server`.
Runs as `python -I -S`: nothing but the standard library. The bytes move with splice(2)
through a pipe (rsync's ends and the daemon's socket are sockets), never through this
process's memory; where splice is refused, by read and write.
"""

import errno
import fcntl
import os
import socket
import sys
import threading

CHUNK = 1 << 16
SPLICED = PIPE_SIZE = 1 << 20


def _splice_all(src, dst):
    """Move everything from fd `src` to fd `dst` until `src` ends; False if splice is refused
    before any byte moved. splice(2) needs a pipe on one side, and rsync's ends and the
    daemon's socket are all sockets: the bytes go through a pipe of this process's own,
    as page references, not copies into its memory."""
    moved = False
    pipe_out, pipe_in = os.pipe()
    _widen(pipe_in)
    try:
        while True:
            try:
                count = os.splice(src, pipe_in, SPLICED)
            except OSError as e:
                if not moved and e.errno in (errno.EINVAL, errno.ENOSYS):
                    return False
                raise
            if count == 0:
                return True
            moved = True
            while count:
                count -= os.splice(pipe_out, dst, count)
    finally:
        os.close(pipe_out)
        os.close(pipe_in)


def _up(sock):
    """stdin to the socket; at its end the socket's sending half closes (the barrier)."""
    try:
        if not _splice_all(0, sock.fileno()):
            while True:
                data = os.read(0, CHUNK)
                if not data:
                    break
                sock.sendall(data)
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _widen(fd):
    """A pipe of 1 MiB where the system allows: fewer, larger moves (nothing if not a pipe)."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass


def main():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PIPE_SIZE)
    sock.connect(sys.argv[1])
    _widen(0)
    _widen(1)
    threading.Thread(target=_up, args=(sock,), daemon=True).start()
    try:
        if not _splice_all(sock.fileno(), 1):
            while True:
                data = sock.recv(CHUNK)
                if not data:
                    break
                view = memoryview(data)
                while view:
                    view = view[os.write(1, view):]
    except OSError:
        pass
    os.close(1)


if __name__ == "__main__":
    main()
