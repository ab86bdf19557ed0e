#!/usr/bin/env python3
"""A three-member cluster against one lone daemon: container create and `lxc list`.

    bench/cluster.py [--count 60] [--rounds 5]      # run from the checkout, as root

In one run: a lone daemon (SQLite) and a cluster of three daemons on etcd, each in a
network namespace of its own joined by a bridge in a fourth (as the cluster tests make
them). Each gets a `dir` pool (the cluster's defined per member, then made on all) and a
profile with its root disk. Then:

- create: `--count` containers (`source: none`, so the figure is the API, store and
  volume path, not an image unpack), one after the other, each POST answered and its
  operation waited for; the cluster's asked of member 1 without a target, so placement
  spreads them over the three members and two thirds are forwarded;
- `lxc list` with them all (median of `--rounds`), on the lone daemon and on member 1
  (which asks the other two for theirs).

Prints seconds and the cluster/lone ratios. Everything made is removed at the end.
Not a timed test.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.daemonproc import Daemon, wait_until
from tests.etcdproc import ETCD
from tests.integration.test_cluster_join import PASSWORD, _join, _members, three_daemons

ROOT = {"root": {"type": "disk", "path": "/", "pool": "default"}}


def create_all(d, count, prefix):
    t0 = time.perf_counter()
    for i in range(count):
        op = d.request("POST", "/1.0/containers", {"name": f"{prefix}{i}", "source": {"type": "none"},
                                                   "devices": ROOT})
        assert op.status == 202, op.json
        done = d.wait_operation(op)
        assert done["status"] == "Success", done
    return time.perf_counter() - t0


def list_time(d, rounds, count):
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = d.lxc("list", "--format=csv", "-c", "ns").stdout
        times.append(time.perf_counter() - t0)
        assert len(out.splitlines()) == count, out
    return statistics.median(times)


def delete_all(d, count, prefix):
    for i in range(count):
        op = d.request("DELETE", f"/1.0/containers/{prefix}{i}")
        if op.status == 202:
            d.wait_operation(op)


def lone(args, work):
    d = Daemon().start(timeout=120)
    try:
        d.lxc("storage", "create", "default", "dir", f"source={work}/lone")
        created = create_all(d, args.count, "bl")
        listed = list_time(d, args.rounds, args.count)
        delete_all(d, args.count, "bl")
        return created, listed
    finally:
        d.cleanup()


def cluster(args, work):
    daemons = three_daemons()
    try:
        node1, node2, node3 = next(daemons)
        node1.lxc("cluster", "enable", "node1")
        node1.lxc("config", "set", "core.trust_password", PASSWORD)
        assert _join(node1, node2, "node2")["status"] == "Success"
        assert _join(node1, node3, "node3")["status"] == "Success"
        assert wait_until(lambda: len(_members(node1)) == 3
                          and all(m["status"] == "Online" for m in _members(node1).values()), timeout=60)
        for i in (1, 2, 3):
            node1.lxc("storage", "create", "default", "dir", f"source={work}/node{i}", "--target", f"node{i}")
        node1.lxc("storage", "create", "default", "dir")
        created = create_all(node1, args.count, "bc")
        spread = {}
        for c in node1.request("GET", "/1.0/containers?recursion=1").metadata:
            spread[c["location"]] = spread.get(c["location"], 0) + 1
        listed = list_time(node1, args.rounds, args.count)
        delete_all(node1, args.count, "bc")
        return created, listed, spread
    finally:
        daemons.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    if not os.path.exists(ETCD):
        sys.exit("etcd is not installed (Debian package etcd-server)")
    work = tempfile.mkdtemp(prefix="lxdtx-bench-cluster-", dir="/var/tmp")
    try:
        lone_create, lone_list = lone(args, work)
        cl_create, cl_list, spread = cluster(args, work)
    finally:
        subprocess.run(["rm", "-rf", work], check=False)
    n = args.count
    print(f"{n} containers (source none), lxc list median of {args.rounds}")
    print(f"  lone daemon : create {lone_create:7.2f} s ({lone_create / n * 1000:6.1f} ms each), "
          f"lxc list {lone_list:6.3f} s")
    print(f"  3 members   : create {cl_create:7.2f} s ({cl_create / n * 1000:6.1f} ms each), "
          f"lxc list {cl_list:6.3f} s   placed: {dict(sorted(spread.items()))}")
    print(f"  ratio cluster/lone: create {cl_create / lone_create:5.2f}x, lxc list {cl_list / lone_list:5.2f}x")


if __name__ == "__main__":
    main()
