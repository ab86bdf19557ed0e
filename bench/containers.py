#!/usr/bin/env python3
"""Container lifecycle timings with the real `lxc` client, against the liblxc floor.

    bench/containers.py --dir /var/lib/lxdtx [--rounds 5] [--list 20]

Measures, as medians over the rounds: `lxc launch busybox` (to RUNNING), `lxc stop -f`,
`lxc delete`, and `lxc list` with N running containers; the floor is `lxc-start -d`
and `lxc-stop -k` on one of our containers (same rootfs and config) in the same run.
Needs a daemon initialised with `lxdtx init --auto` (the `busybox` image).
"""

import argparse
import os
import statistics
import subprocess
import time

REFERENCE = {"launch": 0.399, "stop -f": 0.632, "delete": 0.031, "list": 0.066}
TARGET = {"launch": 0.320, "stop -f": 0.200, "delete": 0.031, "list": 0.053}


def timed(argv, env):
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=os.environ.get("LXD_DIR", "/var/lib/lxdtx"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--list", type=int, default=20)
    args = parser.parse_args()
    env = dict(os.environ, LXD_DIR=args.dir)
    lxcpath = os.path.join(args.dir, "lxc")
    results = {k: [] for k in ("launch", "stop -f", "delete", "lxc-start", "lxc-stop -k", "list")}
    try:
        for i in range(args.rounds):
            name = f"bench-{os.getpid()}-{i}"
            results["launch"].append(timed(["lxc", "launch", "busybox", name], env))
            results["stop -f"].append(timed(["lxc", "stop", "-f", name], env))
            results["lxc-start"].append(timed(["lxc-start", "-n", name, "-P", lxcpath, "-d"], env))
            results["lxc-stop -k"].append(timed(["lxc-stop", "-k", "-n", name, "-P", lxcpath], env))
            results["delete"].append(timed(["lxc", "delete", name], env))
        many = [f"bench-list-{os.getpid()}-{i}" for i in range(args.list)]
        for name in many:
            subprocess.run(["lxc", "launch", "busybox", name], env=env, check=True, capture_output=True)
        for _ in range(args.rounds):
            results["list"].append(timed(["lxc", "list"], env))
    finally:
        out = subprocess.run(["lxc", "list", "-c", "n", "--format", "csv"], env=env, capture_output=True, text=True)
        for name in out.stdout.split():
            if name.startswith("bench-"):
                subprocess.run(["lxc", "delete", "-f", name], env=env, capture_output=True)
    med = {k: statistics.median(v) for k, v in results.items() if v}
    floor = {"launch": med["lxc-start"], "stop -f": med["lxc-stop -k"]}
    print(f"{'step':10} {'lxdtx ms':>9} {'floor ms':>9} {'ratio':>6} {'reference':>9} {'target':>7}")
    for key in ("launch", "stop -f", "delete", "list"):
        f = floor.get(key)
        ratio = f"{med[key] / f:6.1f}" if f else "     -"
        fl = f"{f * 1000:9.1f}" if f else "        -"
        print(f"{key:10} {med[key] * 1000:9.1f} {fl} {ratio} {REFERENCE[key] * 1000:9.0f} {TARGET[key] * 1000:7.0f}"
              f"  {'met' if med[key] <= TARGET[key] else 'MISSED'}")
    print(f"(list: {args.list} running containers; medians of {args.rounds} rounds)")


if __name__ == "__main__":
    main()
