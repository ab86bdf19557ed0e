#!/usr/bin/env python3
"""GET /1.0 over the unix socket: latency and requests/s with keep-alive connections.

    bench/api_get.py --dir /var/lib/lxdtx [--connections 4] [--rounds 10] [--requests 400]

Each connection runs in its own process (so the client is not the bottleneck) and
sends its requests one after another; a round is `--requests` requests spread over
the connections. Prints per-round rate, overall latency percentiles and the
daemon's resident memory.
"""

import argparse
import multiprocessing
import os
import socket
import statistics
import time

REQUEST = b"GET /1.0 HTTP/1.1\r\nHost: unix.socket\r\nUser-Agent: bench\r\n\r\n"


def _read_response(sock, buf):
    """Read one reply off `buf` + the socket; return what follows it.

    lxdtx sends a Content-Length; LXD (Go's net/http) sends a reply this large chunked.
    """
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = buf[:end].lower()
            i = head.find(b"content-length:")
            if i >= 0:
                length = int(head[i + 15:].split(b"\r\n", 1)[0])
                if len(buf) >= end + 4 + length:
                    return buf[end + 4 + length:]
            else:
                rest = _after_chunks(buf, end + 4)
                if rest is not None:
                    return rest
        chunk = sock.recv(262144)
        if not chunk:
            raise ConnectionError("daemon closed the connection")
        buf += chunk


def _after_chunks(buf, at):
    """The bytes after a complete chunked body starting at `at`, or None if it is not all here."""
    while True:
        line_end = buf.find(b"\r\n", at)
        if line_end < 0:
            return None
        size = int(buf[at:line_end].split(b";", 1)[0], 16)
        at = line_end + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n", at)
            return None if trailer_end < 0 else buf[trailer_end + 2:]
        if len(buf) < at + size + 2:
            return None
        at += size + 2


def _worker(path, count, start, results):
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    sock.connect(path)
    latencies = []
    buf = b""
    start.wait()
    for _ in range(count):
        t0 = time.perf_counter()
        sock.sendall(REQUEST)
        buf = _read_response(sock, buf)
        latencies.append(time.perf_counter() - t0)
    sock.close()
    results.put(latencies)


def run_round(path, connections, requests):
    start = multiprocessing.Event()
    results = multiprocessing.Queue()
    per = requests // connections
    procs = [multiprocessing.Process(target=_worker, args=(path, per, start, results)) for _ in range(connections)]
    for p in procs:
        p.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    start.set()
    latencies = []
    for _ in procs:
        latencies += results.get(timeout=60)
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join(10)
    return len(latencies) / elapsed, latencies


def daemon_rss_mb(path):
    """Resident memory of the process listening on the socket (via its pid lock file)."""
    try:
        with open(path + ".lock") as f:
            pid = int(f.read().strip() or 0)
    except OSError:
        try:
            pid = int(os.readlink(path + ".lock"))
        except (OSError, ValueError):
            return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=os.environ.get("LXD_DIR", "/var/lib/lxdtx"))
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--target", type=float, default=5600 * 1.2, help="req/s to compare with")
    args = parser.parse_args()
    path = os.path.join(args.dir, "unix.socket")
    rss = daemon_rss_mb(path)
    rates, all_latencies = [], []
    for number in range(1, args.rounds + 1):
        rate, latencies = run_round(path, args.connections, args.requests)
        rates.append(rate)
        all_latencies += latencies
        print(f"round {number:2d}: {rate:8.0f} req/s")
    all_latencies.sort()
    pct = lambda p: all_latencies[min(len(all_latencies) - 1, int(p * len(all_latencies)))] * 1000
    median_rate = statistics.median(rates)
    print(f"median {median_rate:.0f} req/s; {median_rate / 5600:.2f}x the reference daemon (5600), "
          f"target {args.target:.0f}: {'met' if median_rate >= args.target else 'missed'}")
    print(f"latency ms: p50 {pct(0.5):.3f}  p90 {pct(0.9):.3f}  p99 {pct(0.99):.3f}")
    if rss is not None:
        print(f"daemon RSS before the run: {rss:.1f} MB")


if __name__ == "__main__":
    main()
