#!/usr/bin/env python3
"""Speed at real scale: a Debian image against busybox, dir and btrfs, hundreds of containers.

    bench/scale.py [--count 200] [--rounds 3] [--no-reference]     # run from the checkout, as root

Starts a throw-away lxdtx daemon (and, when Debian's `lxd` is installed and not
`--no-reference`, LXD 5.0.2 in a network namespace of its own, bench/reference.py) and
measures with the real `lxc` client, as medians over the rounds:

- `lxc launch` (to RUNNING) of the Debian 12 minbase image (tests/debianimage.py: built
  once with debootstrap, cached in /var/cache/lxdtx-test) and of busybox, on the `dir`
  pool and on a btrfs pool on a loop file made for the run; the first launch of an image
  on a pool (which unpacks it there) is shown apart;
- `lxc stop -f` and `lxc delete` of a Debian container; the liblxc floor is `lxc-start -d`
  and `lxc-stop -k` on the same container in the same run;
- with `--count` busybox containers running (profile with a root disk only, no nic):
  `lxc list` time, the daemon's RSS growth per container, GET /1.0 requests/s before
  and after.

Everything made is removed at the end (containers, pools, images, daemons, namespace).
Not a timed test: it prints the figures.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import api_get  # noqa: E402
from reference import ReferenceLXD  # noqa: E402

BTRFS_POOL = "bench-btrfs"
PROFILE = "bench"


class Target:
    """One daemon under test: its `lxc` environment, liblxc path, pid and socket."""

    def __init__(self, label, env, lxcpath, pid, socket_path):
        self.label, self.env, self.lxcpath, self.pid, self.socket = label, env, lxcpath, pid, socket_path
        # LXD's liblxc configs need LXD itself (its hooks): the floor is measured on ours.
        self.has_floor = label == "lxdtx"

    def lxc(self, *args, check=True, timeout=600):
        return subprocess.run(["lxc", *args], env=self.env, check=check, capture_output=True, text=True,
                              timeout=timeout)

    def timed(self, *args):
        t0 = time.perf_counter()
        self.lxc(*args)
        return time.perf_counter() - t0

    def floor(self, tool, name, *args):
        if not self.has_floor:
            return None
        t0 = time.perf_counter()
        subprocess.run([tool, "-n", name, "-P", self.lxcpath, *args], check=True, capture_output=True)
        return time.perf_counter() - t0

    def rss_kb(self):
        with open(f"/proc/{self.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def median_ms(values):
    return statistics.median(values) * 1000 if values else float("nan")


def prepare(t, debian_image):
    """The Debian image, a root-disk-only profile, the btrfs pool."""
    t.lxc("image", "import", debian_image, "--alias", "debian12")
    t.lxc("profile", "create", PROFILE)
    t.lxc("profile", "device", "add", PROFILE, "root", "disk", "path=/", "pool=default")
    t.lxc("storage", "create", BTRFS_POOL, "btrfs", "size=4GB")


def launches(t, rounds):
    """{(image, pool): {"first", "launch", "stop -f", "delete", "lxc-start", "lxc-stop -k"}}."""
    out = {}
    for pool in ("default", BTRFS_POOL):
        for image in ("debian12", "busybox"):
            r = {k: [] for k in ("launch", "stop -f", "delete", "lxc-start", "lxc-stop -k")}
            r["first"] = t.timed("launch", image, "sc-first", "-p", PROFILE, "-s", pool)
            t.lxc("delete", "-f", "sc-first")
            for i in range(rounds):
                name = f"sc-{image}-{i}"
                r["launch"].append(t.timed("launch", image, name, "-p", PROFILE, "-s", pool))
                time.sleep(0.5)  # init settled: what is stopped is a booted system
                r["stop -f"].append(t.timed("stop", "-f", name))
                if t.has_floor:
                    r["lxc-start"].append(t.floor("lxc-start", name, "-d"))
                    time.sleep(0.5)
                    r["lxc-stop -k"].append(t.floor("lxc-stop", name, "-k"))
                r["delete"].append(t.timed("delete", name))
            out[(image, pool)] = r
    return out


def get_rate(t, seconds_rounds=3):
    """GET /1.0 requests/s (nan where api_get's minimal HTTP reader cannot parse the answers)."""
    try:
        rates = [api_get.run_round(t.socket, 2, 2000)[0] for _ in range(seconds_rounds)]
    except Exception as e:  # the reader expects Content-Length framing
        print(f"[{t.label}] GET /1.0 rate not measured: {e!r}")
        return float("nan")
    return statistics.median(rates)


def many(t, count, rounds):
    """(list seconds [rounds], RSS kB before, after, GET/s before, after, launched)."""
    rate_before = get_rate(t)
    rss_before = t.rss_kb()
    launched = 0
    try:
        for i in range(count):
            t.lxc("launch", "busybox", f"sc-many-{i}", "-p", PROFILE)
            launched += 1
    except subprocess.CalledProcessError as e:
        print(f"[{t.label}] stopped at {launched} containers: {e.stderr.strip()[:300]}")
    time.sleep(2)
    rss_after = t.rss_kb()
    lists = [t.timed("list") for _ in range(rounds)]
    rate_after = get_rate(t)
    return lists, rss_before, rss_after, rate_before, rate_after, launched


def cleanup(t):
    out = t.lxc("list", "-c", "n", "--format", "csv", check=False).stdout.split()
    names = [n for n in out if n.startswith("sc-")]
    for i in range(0, len(names), 20):
        t.lxc("delete", "-f", *names[i:i + 20], check=False)
    t.lxc("storage", "delete", BTRFS_POOL, check=False)
    t.lxc("profile", "delete", PROFILE, check=False)
    t.lxc("image", "delete", "debian12", check=False)


def run_target(t, debian_image, rounds, count):
    prepare(t, debian_image)
    try:
        result = {"launch": launches(t, rounds)}
        result["many"] = many(t, count, rounds) if count else None
        return result
    finally:
        cleanup(t)


def report(results, count):
    ours = results["lxdtx"]
    ref = results.get("lxd")
    print("\n== launch, stop -f, delete (median ms) ==")
    print(f"{'image/pool':22} {'step':12} {'lxdtx':>8} {'floor':>8} {'x floor':>8} {'LXD':>8} {'x LXD':>7}")
    for key, r in ours["launch"].items():
        label = f"{key[0]}/{'dir' if key[1] == 'default' else 'btrfs'}"
        floors = {"launch": r["lxc-start"], "stop -f": r["lxc-stop -k"]}
        for step in ("first", "launch", "stop -f", "delete"):
            mine = r["first"] * 1000 if step == "first" else median_ms(r[step])
            floor = median_ms(floors[step]) if step in floors else None
            theirs = None
            if ref:
                rr = ref["launch"][key]
                theirs = rr["first"] * 1000 if step == "first" else median_ms(rr[step])
            print(f"{label:22} {step:12} {mine:8.0f} {floor if floor else float('nan'):8.1f} "
                  f"{(mine / floor) if floor else float('nan'):8.1f} {theirs if theirs else float('nan'):8.0f} "
                  f"{(mine / theirs) if theirs else float('nan'):7.2f}")
    for pool in ("default", BTRFS_POOL):
        d, b = median_ms(ours["launch"][("debian12", pool)]["launch"]), median_ms(
            ours["launch"][("busybox", pool)]["launch"])
        print(f"lxdtx Debian/busybox launch on {'dir' if pool == 'default' else 'btrfs'}: {d / b:.2f}x")
    if not ours["many"]:
        return
    print(f"\n== {count} running busybox containers ==")
    for label, res in results.items():
        lists, rss0, rss1, rate0, rate1, launched = res["many"]
        print(f"{label}: {launched} running; lxc list {median_ms(lists):.0f} ms; RSS {rss0 / 1024:.1f} -> "
              f"{rss1 / 1024:.1f} MB ({(rss1 - rss0) / max(launched, 1):.0f} kB/container); "
              f"GET /1.0 {rate0:.0f} -> {rate1:.0f} req/s")
    if ref:
        print(f"lxc list lxdtx/LXD: {median_ms(ours['many'][0]) / median_ms(ref['many'][0]):.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="busybox containers for list/RSS (0: skip)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-reference", action="store_true", help="without LXD 5.0.2 even if installed")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (containers, loop devices)")
    from tests import debianimage
    from tests.daemonproc import Daemon

    debian_image = debianimage.cached_image()
    print(f"Debian image: {debian_image} ({os.path.getsize(debian_image) / 1e6:.0f} MB xz)")
    results = {}
    daemon = Daemon(auto_init=True).start(timeout=120)
    ref = None
    try:
        t = Target("lxdtx", daemon.env(), os.path.join(daemon.dir, "lxc"), daemon.proc.pid, daemon.socket_path)
        results["lxdtx"] = run_target(t, debian_image, args.rounds, args.count)
        if not args.no_reference and shutil.which("lxd"):
            ref = ReferenceLXD().start(daemon.env())
            # `ip netns exec` execs lxd: the same pid.
            rt = Target("lxd", ref.env, ref.lxcpath, ref.proc.pid, os.path.join(ref.dir, "unix.socket"))
            try:
                results["lxd"] = run_target(rt, debian_image, args.rounds, args.count)
            except Exception as e:  # lxdtx's figures are printed all the same
                print(f"LXD run failed: {e!r} {getattr(e, 'stderr', '')}")
        elif not args.no_reference:
            print("LXD 5.0.2 is not installed: figures of lxdtx and the liblxc floor only")
    finally:
        if ref is not None:
            ref.stop()
        daemon.cleanup()
    report(results, args.count)


if __name__ == "__main__":
    tempfile.tempdir = "/var/tmp"
    main()
