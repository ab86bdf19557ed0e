#!/usr/bin/env python3
"""Storage timings with the real `lxc` client: btrfs (image subvolume snapshots) against dir (unpack, rsync).

    bench/storage.py --dir /var/lib/lxdtx [--rounds 5] [--payload-mb 64]
    bench/storage.py --spawn              # a throw-away daemon in /var/tmp (run from the checkout)

For each pool (the `default` dir pool and a 4GB btrfs pool on a loop file made
for the run) it measures, as medians over the rounds: `lxc init busybox` (the
storage part of a launch: unpack on dir, a subvolume snapshot on btrfs; the
first btrfs init, which unpacks the image into the pool, is shown apart),
`lxc launch busybox`, and with `--payload-mb` of files written in the
container: `lxc snapshot`, `lxc restore`, `lxc copy`; then `lxc move -s`
between the two pools. Needs a daemon initialised with `lxdtx init --auto`.
Not a timed test: it prints the figures.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

POOL = "bench-btrfs"


def timed(argv, env):
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def lxc(env, *args, check=True):
    return subprocess.run(["lxc", *args], env=env, check=check, capture_output=True, text=True)


def measure(env, pool, rounds, payload_mb):
    """{step: [seconds]} for one pool."""
    results = {k: [] for k in ("init", "launch", "snapshot", "restore", "copy")}
    for i in range(rounds):
        name = f"bs-{pool}-{i}"
        results["init"].append(timed(["lxc", "init", "busybox", name, "-s", pool], env))
        lxc(env, "delete", name)
        results["launch"].append(timed(["lxc", "launch", "busybox", name, "-s", pool], env))
        if payload_mb:
            lxc(env, "exec", name, "--", "sh", "-c",
                f"mkdir /payload && for i in $(seq {payload_mb}); do "
                "dd if=/dev/urandom of=/payload/f$i bs=1M count=1 2>/dev/null; done; sync")
        results["snapshot"].append(timed(["lxc", "snapshot", name, "s1"], env))
        lxc(env, "exec", name, "--", "sh", "-c", "rm -rf /payload; echo changed > /changed; sync")
        results["restore"].append(timed(["lxc", "restore", name, "s1"], env))
        lxc(env, "stop", "-f", name)
        results["copy"].append(timed(["lxc", "copy", name, f"{name}-copy"], env))
        lxc(env, "delete", "-f", name, f"{name}-copy")
    return results


def run(env, rounds, payload_mb):
    created = lxc(env, "storage", "show", POOL, check=False).returncode != 0
    if created:
        lxc(env, "storage", "create", POOL, "btrfs", "size=4GB")
    try:
        first = timed(["lxc", "init", "busybox", "bs-first", "-s", POOL], env)
        lxc(env, "delete", "bs-first")
        dir_results = measure(env, "default", rounds, payload_mb)
        btrfs_results = measure(env, POOL, rounds, payload_mb)
        moves = {"move btrfs→dir": [], "move dir→btrfs": []}
        for i in range(rounds):
            name = f"bs-move-{i}"
            lxc(env, "init", "busybox", name, "-s", POOL)
            if payload_mb:
                lxc(env, "start", name)
                lxc(env, "exec", name, "--", "sh", "-c",
                    f"mkdir /payload && for i in $(seq {payload_mb}); do "
                    "dd if=/dev/urandom of=/payload/f$i bs=1M count=1 2>/dev/null; done; sync")
                lxc(env, "stop", "-f", name)
            moves["move btrfs→dir"].append(timed(["lxc", "move", name, "-s", "default"], env))
            moves["move dir→btrfs"].append(timed(["lxc", "move", name, "-s", POOL], env))
            lxc(env, "delete", "-f", name)
    finally:
        out = lxc(env, "list", "-c", "n", "--format", "csv", check=False).stdout
        for name in out.split():
            if name.startswith("bs-"):
                lxc(env, "delete", "-f", name, check=False)
        if created:
            lxc(env, "storage", "delete", POOL, check=False)
    print(f"payload per container: {payload_mb} MB of files; medians of {rounds} rounds")
    print(f"first init on btrfs (unpacks the image into the pool): {first * 1000:7.0f} ms")
    print(f"{'step':16} {'dir ms':>8} {'btrfs ms':>9} {'dir/btrfs':>9}")
    for key in ("init", "launch", "snapshot", "restore", "copy"):
        a, b = statistics.median(dir_results[key]), statistics.median(btrfs_results[key])
        print(f"{key:16} {a * 1000:8.0f} {b * 1000:9.0f} {a / b:9.1f}")
    for key, values in moves.items():
        print(f"{key:16} {statistics.median(values) * 1000:8.0f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=os.environ.get("LXD_DIR", "/var/lib/lxdtx"))
    parser.add_argument("--spawn", action="store_true", help="run a throw-away daemon for the benchmark")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--payload-mb", type=int, default=64)
    args = parser.parse_args()
    if not args.spawn:
        run(dict(os.environ, LXD_DIR=args.dir), args.rounds, args.payload_mb)
        return
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests.daemonproc import Daemon

    daemon = Daemon(auto_init=True).start(timeout=120)
    try:
        run(daemon.env(), args.rounds, args.payload_mb)
    finally:
        daemon.cleanup()


if __name__ == "__main__":
    main()
