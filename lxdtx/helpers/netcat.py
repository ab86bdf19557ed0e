"""rsync's remote shell during a migration: `netcat.py SOCKET [rsync's remote command...]`.

rsync talks to its peer through this process's stdin and stdout; they are joined to
the daemon's unix socket SOCKET, which the daemon joins to the `fs` websocket. The
remote command rsync passes is ignored: the peer runs its own `rsync --server`.
Runs as `python -I -S`: nothing but the standard library.
"""

import os
import socket
import sys
import threading

CHUNK = 1 << 16


def _up(sock):
    """stdin to the socket; at its end the socket's sending half closes (the barrier)."""
    try:
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


def main():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(sys.argv[1])
    threading.Thread(target=_up, args=(sock,), daemon=True).start()
    try:
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
