#!/usr/bin/env python3
"""Streams relayed between cluster members against the same streams on the member itself.

    sudo bench/cluster_streams.py [--rounds 20] [--megabytes 100]

Builds the three-member cluster of tests/integration/test_cluster_streams.py (three
network namespaces, etcd-server needed), launches a busybox container on node3, and
times, from node3 itself and from node1 (every request forwarded, every websocket
relayed by node1): `GET /1.0/containers/c` and `lxc exec c -- true` (medians of --rounds), and `lxc exec` writing --megabytes of output
(MB/s). Prints each figure and the relayed/direct ratios. Everything it made is removed.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tests.integration.test_cluster_streams import streams_cluster  # noqa: E402


def _exec_true(d, name, rounds):
    times = []
    for _ in range(rounds):
        started = time.monotonic()
        d.lxc("exec", name, "--", "true")
        times.append(time.monotonic() - started)
    return statistics.median(times)


def _get(d, name, rounds):
    times = []
    for _ in range(rounds):
        started = time.monotonic()
        assert d.request("GET", f"/1.0/containers/{name}").status == 200
        times.append(time.monotonic() - started)
    return statistics.median(times)


def _throughput(d, name, megabytes):
    started = time.monotonic()
    proc = subprocess.run(["lxc", "exec", name, "--", "sh", "-c", f"head -c {megabytes * 1000000} /dev/zero"],
                          env=d.env(), stdout=subprocess.PIPE, check=True, timeout=600)
    elapsed = time.monotonic() - started
    assert len(proc.stdout) == megabytes * 1000000
    return megabytes / elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--megabytes", type=int, default=100)
    args = parser.parse_args()
    made = streams_cluster()
    node1, _, node3 = next(made)
    try:
        node1.lxc("launch", "busybox", "bench", "--target", "node3")
        direct, relayed = _get(node3, "bench", args.rounds), _get(node1, "bench", args.rounds)
        print(f"GET /1.0/containers/c, median of {args.rounds}: direct {direct * 1000:.1f} ms, "
              f"forwarded {relayed * 1000:.1f} ms, ratio {relayed / direct:.2f}")
        direct, relayed = _exec_true(node3, "bench", args.rounds), _exec_true(node1, "bench", args.rounds)
        print(f"lxc exec -- true, median of {args.rounds}: direct {direct * 1000:.1f} ms, "
              f"relayed {relayed * 1000:.1f} ms, ratio {relayed / direct:.2f}")
        direct, relayed = _throughput(node3, "bench", args.megabytes), _throughput(node1, "bench", args.megabytes)
        print(f"lxc exec output, {args.megabytes} MB: direct {direct:.1f} MB/s, relayed {relayed:.1f} MB/s, "
              f"ratio {relayed / direct:.2f}")
        node1.lxc("delete", "-f", "bench")
    finally:
        made.close()


if __name__ == "__main__":
    main()
