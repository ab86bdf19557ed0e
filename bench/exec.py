#!/usr/bin/env python3
"""`lxc exec c -- true` against `lxc-attach -- true` on the same container, and `lxc file push`.

    bench/exec.py [--dir DIR] [--rounds 50] [--push-mib 100] [--reference]

Without --dir a temporary daemon is started (`twistd -n lxdtx --auto-init`) and
removed afterwards. Prints medians, back to back and paced, against the liblxc
floor and the `lxc` client's own start-up (`lxc --version`, which contacts no
daemon, and `lxc version`, which sends GET /1.0 twice), run in turns with
`lxc exec`. Our exec does not run `lxc-attach` (a fork of the
container's exec zygote is the command), so it can come in under that floor.
With --reference, Debian's `lxd` runs the same busybox container in the same
run (bench/reference.py) and its `lxc exec` is measured against its own floor.
"""

import argparse
import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.reference import ReferenceLXD  # noqa: E402
from tests.daemonproc import Daemon  # noqa: E402


def once(argv, env=None):
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.decode()}")
    return (time.perf_counter() - start) * 1000


def median_ms(argv, rounds, env=None):
    return statistics.median(once(argv, env) for _ in range(rounds))


class LeanClient:
    """The requests `lxc exec c -- true` makes, in its order, from a client that costs
    next to nothing: what is left is the daemon's share and the command's."""

    def __init__(self, socket_path):
        self.path = socket_path

    def _connect(self, head):
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(10)
        sock.connect(self.path)
        sock.sendall(head)
        return sock

    def _read_until(self, sock, marker, buf=b""):
        while marker not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("daemon closed the connection")
            buf += chunk
        return buf

    def _request(self, method, path, body=b""):
        sock = self._connect(f"{method} {path} HTTP/1.1\r\nHost: unix.socket\r\nConnection: close\r\n"
                             f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        buf = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
        sock.close()
        return json.loads(buf.split(b"\r\n\r\n", 1)[1])

    def _websocket(self, path):
        key = base64.b64encode(os.urandom(16)).decode()
        sock = self._connect(f"GET {path} HTTP/1.1\r\nHost: unix.socket\r\nUpgrade: websocket\r\n"
                             f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                             "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        rest = self._read_until(sock, b"\r\n\r\n").split(b"\r\n\r\n", 1)[1]
        return sock, rest

    def exec_true(self, name):
        """One `true`: GET /1.0, the events socket, POST, control then 0, 1, 2, the EOF
        frames of 1 and 2, and the operation's end. Returns milliseconds."""
        start = time.perf_counter()
        self._request("GET", "/1.0")
        events, _ = self._websocket("/1.0/events")
        body = json.dumps({"command": ["true"], "wait-for-websocket": True, "interactive": False,
                           "environment": {"TERM": "xterm"}}).encode()
        op = self._request("POST", f"/1.0/containers/{name}/exec", body)["metadata"]
        base = f"/1.0/operations/{op['id']}/websocket?secret="
        sockets = [self._websocket(base + op["metadata"]["fds"][fd]) for fd in ("control", "0", "1", "2")]
        for sock, rest in sockets[2:]:
            self._read_until(sock, b"\x81\x00", rest)  # the empty text frame that ends a stream
        self._request("GET", f"/1.0/operations/{op['id']}/wait?timeout=10")
        elapsed = (time.perf_counter() - start) * 1000
        for sock, _ in sockets:
            sock.close()
        events.close()
        return elapsed


def interleaved(commands, rounds, gap=0.0):
    """Median of each (argv, env) with the commands run in turn, `gap` seconds apart.

    The kernel's cgroup attach (every lxc-attach moves its child into the
    container's cgroups) waits for an RCU grace period unless another attach
    happened just before: a command run back to back looks much cheaper than
    one run on its own. Interleaving with a gap gives every command the same
    conditions.
    """
    times = [[] for _ in commands]
    for _ in range(rounds):
        for i, (argv, env) in enumerate(commands):
            time.sleep(gap)
            times[i].append(once(argv, env))
    return [statistics.median(t) for t in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="state directory of a running daemon (default: start one)")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--push-mib", type=int, default=100)
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between commands (see interleaved)")
    parser.add_argument("--reference", action="store_true", help="also measure Debian's lxd on the same container")
    args = parser.parse_args()

    daemon = None
    if args.dir:
        env = dict(os.environ, LXD_DIR=args.dir, LXD_CONF=tempfile.mkdtemp(prefix="lxc-conf-"))
        state_dir = args.dir
    else:
        daemon = Daemon(auto_init=True).start(timeout=120)
        env = daemon.env()
        state_dir = daemon.dir
    name = "bench-exec"
    work = tempfile.mkdtemp(prefix="lxdtx-bench-", dir="/var/tmp")
    reference = None
    try:
        if args.reference:
            reference = ReferenceLXD().start(env)
            reference.lxc("launch", "busybox", name)
            median_ms(["lxc", "exec", name, "--", "true"], 3, reference.env)
        subprocess.run(["lxc", "launch", "busybox", name], env=env, check=True, capture_output=True)
        lxcpath = os.path.join(state_dir, "lxc")
        # Warm both paths up.
        median_ms(["lxc", "exec", name, "--", "true"], 3, env)
        median_ms(["lxc-attach", "-n", name, "-P", lxcpath, "--clear-env", "--", "true"], 3)

        attach = ["lxc-attach", "-n", name, "-P", lxcpath, "--clear-env", "--", "true"]
        exec_true = ["lxc", "exec", name, "--", "true"]
        attach_b2b = median_ms(attach, args.rounds)
        # In turns, so that the machine's drift over the run falls on all alike.
        start, version, ours_b2b = interleaved([(["lxc", "--version"], env), (["lxc", "version"], env),
                                                (exec_true, env)], args.rounds)
        floor, start_paced, version_paced, ours = interleaved(
            [(attach, None), (["lxc", "--version"], env), (["lxc", "version"], env), (exec_true, env)],
            args.rounds, args.gap)
        print(f"{'':30}{'back to back':>14}{f'paced {args.gap * 1000:.0f} ms':>16}")
        print(f"{'lxc-attach -- true (floor)':30}{attach_b2b:11.2f} ms{floor:13.2f} ms")
        print(f"{'lxc --version (client start)':30}{start:11.2f} ms{start_paced:13.2f} ms")
        print(f"{'lxc version (GET /1.0 twice)':30}{version:11.2f} ms{version_paced:13.2f} ms")
        print(f"{'lxc exec -- true':30}{ours_b2b:11.2f} ms{ours:13.2f} ms")
        print(f"{'  ratio to lxc-attach':30}{ours_b2b / attach_b2b:14.2f}{ours / floor:16.2f}")
        print(f"{'  beyond client start':30}{ours_b2b - start:11.2f} ms{ours - start_paced:13.2f} ms")
        lean = LeanClient(os.path.join(state_dir, "unix.socket"))
        protocol = statistics.median(lean.exec_true(name) for _ in range(args.rounds))
        print(f"{'same requests, lean client':30}{protocol:11.2f} ms   (the daemon's share and the command's)")
        if reference is not None:
            # liblxc's command socket is an abstract one, seen only in its daemon's network
            # namespace: both floors go through nsenter, so they cost the same extra exec.
            ours_attach = ["nsenter", f"--net=/proc/{os.getpid()}/ns/net", *attach]
            ref_attach = ["nsenter", f"--net=/run/netns/{reference.netns}",
                          "lxc-attach", "-n", name, "-P", reference.lxcpath, "--clear-env", "--", "true"]
            floor, ref_floor, ours, ref = interleaved(
                [(ours_attach, None), (ref_attach, None), (exec_true, env), (exec_true, reference.env)],
                args.rounds, args.gap)
            print(f"paced, in turns:  lxdtx {ours:.2f} ms / floor {floor:.2f} ms = {ours / floor:.2f}x;"
                  f"  lxd {ref:.2f} ms / floor {ref_floor:.2f} ms = {ref / ref_floor:.2f}x")

        path = os.path.join(work, "push.bin")
        with open(path, "wb") as f:
            for _ in range(args.push_mib):
                f.write(os.urandom(1024 * 1024))
        copy, push = interleaved([
            (["cp", path, os.path.join(work, "copy.bin")], None),
            (["lxc", "file", "push", path, f"{name}/root/push.bin"], env),
        ], max(5, args.rounds // 10))
        print(f"cp {args.push_mib} MiB (host floor)       {copy:8.2f} ms")
        print(f"lxc file push {args.push_mib} MiB          {push:8.2f} ms   ratio to cp {push / copy:5.2f}")
    finally:
        subprocess.run(["lxc", "delete", "-f", name], env=env, capture_output=True)
        if reference is not None:
            subprocess.run(["lxc", "delete", "-f", name], env=reference.env, capture_output=True)
            reference.stop()
        shutil.rmtree(work, ignore_errors=True)
        if daemon is not None:
            daemon.cleanup()


if __name__ == "__main__":
    main()
