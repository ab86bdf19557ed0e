#!/usr/bin/env python3
"""`lxc copy` of a container between two daemons against plain rsync of the same tree over
loopback, as a ratio in the same run; with --reference the same copy between two LXD 5.0.2
daemons (Debian's `lxd`).

    bench/migration.py [--mib 500] [--rounds 3] [--reference] [--live-mib 64]

Two throw-away lxdtx daemons (and, with --reference, two LXD daemons) run in a network
namespace of the run's own, with HTTPS on its loopback. The container holds `--mib` MiB
of incompressible files (one large, the rest in 1 MiB files). The floor is `rsync -a`
of the container's directory to an rsync daemon on the same loopback. Next to the times,
the CPU seconds each costs (the daemons and the processes they ran; rsync's client and
daemon): on a shared machine those vary far less than the times. Not a timed test.

With --live-mib (skipped when CRIU fails its check) a running checkpointable container
holding that many MiB of random data in memory moves live between the two lxdtx daemons,
`--rounds` times; a process in it appends /proc/uptime every 10 ms, and the downtime is
the largest gap between two ticks (frozen on the source to running on the target, as the
container sees it). The memory is that process's own heap (`--live-memory process`, the
default: pages CRIU dumps as they are), or a file in the container's /dev/shm
(`--live-memory tmpfs`: CRIU dumps a tmpfs as a gzipped tar, which costs far more).
"""

import argparse
import itertools
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.reference import ReferenceLXD  # noqa: E402
from tests.integration import counter  # noqa: E402
from tests.integration.netns import Netns, daemon_in  # noqa: E402

PASSWORD = "bench-pw"


def lxc(ns, env, *args):
    return subprocess.run(["ip", "netns", "exec", ns.name, "lxc", *args], env=env, check=True,
                          capture_output=True, text=True, timeout=900)


def fill(ns, env, name, mib):
    lxc(ns, env, "launch", "busybox", name)
    big = mib // 2
    lxc(ns, env, "exec", name, "--", "sh", "-c",
        f"dd if=/dev/urandom of=/root/big bs=1048576 count={big} 2>/dev/null; mkdir /root/many; "
        f"i=0; while [ $i -lt {mib - big} ]; do dd if=/dev/urandom of=/root/many/f$i bs=1048576 count=1 "
        f"2>/dev/null; i=$((i+1)); done; sync")
    lxc(ns, env, "stop", "--force", name)


def pair(ns, env_one, env_two, port_one, port_two):
    for env, port in ((env_one, port_one), (env_two, port_two)):
        lxc(ns, env, "config", "set", "core.https_address", f"127.0.0.1:{port}")
        lxc(ns, env, "config", "set", "core.trust_password", PASSWORD)
    lxc(ns, env_one, "remote", "add", "two", f"https://127.0.0.1:{port_two}", "--password", PASSWORD,
        "--accept-certificate")


def cpu_seconds(pid):
    """CPU time of process `pid` and of its children it reaped (user and system)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def time_copies(ns, env_one, env_two, rounds, pids=()):
    """Median seconds of `rounds` copies; with `pids` (the two daemons) also the median CPU
    seconds a copy costs them and the processes they ran (rsync, its remote shell)."""
    times, cpus = [], []
    for i in range(rounds):
        before = sum(cpu_seconds(pid) for pid in pids)
        started = time.perf_counter()
        lxc(ns, env_one, "copy", "bench", f"two:bench{i}")
        times.append(time.perf_counter() - started)
        time.sleep(0.5)  # the source's rsync may still be exiting when the target is done
        cpus.append(sum(cpu_seconds(pid) for pid in pids) - before)
        lxc(ns, env_two, "delete", f"bench{i}")
    return statistics.median(times), statistics.median(cpus)


def rsync_floor(ns, tree, rounds):
    """`rsync -a` of `tree` to an rsync daemon on the namespace's loopback; median seconds."""
    work = tempfile.mkdtemp(prefix="lxdtx-bench-rsync-", dir="/var/tmp")
    try:
        conf = os.path.join(work, "rsyncd.conf")
        with open(conf, "w") as f:
            f.write(f"use chroot = no\nuid = root\ngid = root\n[t]\npath = {work}/t\nread only = no\n")
        proc = subprocess.Popen(["ip", "netns", "exec", ns.name, "rsync", "--daemon", "--no-detach",
                                 f"--config={conf}", "--port=8873", "--address=127.0.0.1"])
        try:
            time.sleep(0.5)
            times, cpus = [], []
            for _ in range(rounds):
                shutil.rmtree(os.path.join(work, "t"), ignore_errors=True)
                os.makedirs(os.path.join(work, "t"))
                usage = resource.getrusage(resource.RUSAGE_CHILDREN)
                before = usage.ru_utime + usage.ru_stime + cpu_seconds(proc.pid)
                started = time.perf_counter()
                subprocess.run(["ip", "netns", "exec", ns.name, "rsync", "-a", "--numeric-ids", "--sparse",
                                tree.rstrip("/") + "/", "rsync://127.0.0.1:8873/t/"], check=True)
                times.append(time.perf_counter() - started)
                time.sleep(0.2)  # the daemon's session process reaped
                usage = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpus.append(usage.ru_utime + usage.ru_stime + cpu_seconds(proc.pid) - before)
            return statistics.median(times), statistics.median(cpus)
        finally:
            proc.terminate()
            proc.wait(10)
    finally:
        shutil.rmtree(work, ignore_errors=True)


TICKS = "while true; do cat /proc/uptime >> /root/ticks; usleep 10000; done\n"


def ticker(mib, memory):
    """The ticking process's script; with `memory` "process" it first holds `mib` MiB of
    random text in a shell variable (base64 of 3/4 as many random bytes)."""
    if memory != "process":
        return "#!/bin/sh\n" + TICKS
    return f"#!/bin/sh\nfill=$(head -c {mib * 786432} /dev/urandom | base64)\n" + TICKS


def live_downtime(ns, env_one, env_two, mib, rounds, memory="process"):
    """Median and worst downtime (seconds) of live moves of a container with `mib` MiB in memory."""
    downs = []
    lxc(ns, env_one, "init", "busybox", "live", "--no-profiles", "--storage", "default")
    lxc(ns, env_one, "config", "set", "live", "migration.stateful", "true")
    for env, path, text in ((env_one, "usr/local/bin/counter", ticker(mib, memory)),
                            (env_one, "etc/inittab", counter.INITTAB)):
        subprocess.run(["ip", "netns", "exec", ns.name, "lxc", "file", "push", "-", f"live/{path}", "-p",
                        "--mode", "0755"], input=text, env=env, check=True, capture_output=True, text=True)
    lxc(ns, env_one, "start", "live")
    if memory == "process":
        deadline = time.monotonic() + 120
        while lxc(ns, env_one, "exec", "live", "--", "sh", "-c", "test -s /root/ticks || echo no").stdout.strip():
            if time.monotonic() > deadline:
                raise RuntimeError("the ticker never started ticking")
            time.sleep(0.5)
        held = lxc(ns, env_one, "exec", "live", "--", "sh", "-c",
                   "grep -h VmRSS /proc/[0-9]*/status | sort -k2 -n | tail -n 1").stdout.split()
        print(f"the ticking process holds {int(held[1]) // 1024} MiB resident")
    else:
        lxc(ns, env_one, "exec", "live", "--", "sh", "-c", f"head -c {mib * 1048576} /dev/urandom > /dev/shm/fill")
    envs = [env_one, env_two]
    remotes = ["one", "two"]
    for i in range(rounds):
        here, there = envs[i % 2], remotes[(i + 1) % 2]
        lxc(ns, here, "exec", "live", "--", "sh", "-c", ": > /root/ticks")
        time.sleep(0.5)
        lxc(ns, here, "move", "live", f"{there}:live")
        time.sleep(0.5)
        ticks = lxc(ns, envs[(i + 1) % 2], "exec", "live", "--", "cat", "/root/ticks").stdout.split("\n")
        times = [float(line.split()[0]) for line in ticks if line.strip()]
        downs.append(max(b - a for a, b in itertools.pairwise(times)))
    lxc(ns, envs[rounds % 2], "delete", "--force", "live")
    return statistics.median(downs), max(downs)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reference", action="store_true", help="also copy between two LXD 5.0.2 daemons")
    parser.add_argument("--live-mib", type=int, default=0, help="also time live moves of a container with "
                        "this many MiB in memory")
    parser.add_argument("--live-memory", choices=("process", "tmpfs"), default="process",
                        help="where that memory is: a process's heap, or a file in /dev/shm")
    args = parser.parse_args()
    ns = Netns("lxdtxb")
    ours, refs = [], []
    try:
        ours = [daemon_in(ns, auto_init=True), daemon_in(ns, auto_init=True)]
        envs = [d.env() for d in ours]
        pair(ns, envs[0], envs[1], 8443, 8444)
        lxc(ns, envs[1], "remote", "add", "one", "https://127.0.0.1:8443", "--password", PASSWORD,
            "--accept-certificate")
        if args.live_mib:
            reason = counter.criu_problem()
            if reason:
                print(f"live moves skipped: {reason}")
            else:
                median, worst = live_downtime(ns, envs[0], envs[1], args.live_mib, args.rounds, args.live_memory)
                print(f"live move downtime, {args.live_mib} MiB in memory ({args.live_memory}), {args.rounds} moves: "
                      f"median {median * 1000:.0f} ms, worst {worst * 1000:.0f} ms")
        fill(ns, envs[0], "bench", args.mib)
        tree = os.path.join(ours[0].dir, "storage-pools", "default", "containers", "bench")
        floor, floor_cpu = rsync_floor(ns, tree, args.rounds)
        copy, copy_cpu = time_copies(ns, envs[0], envs[1], args.rounds, [d.proc.pid for d in ours])
        print(f"{args.mib} MiB container, medians of {args.rounds} (CPU: all processes of each side)")
        print(f"rsync -a to an rsync daemon on loopback  {floor * 1000:8.0f} ms   {floor_cpu:5.2f} CPU-s")
        print(f"lxc copy between two lxdtx daemons       {copy * 1000:8.0f} ms   {copy_cpu:5.2f} CPU-s   "
              f"ratio {copy / floor:.2f} (CPU {copy_cpu / floor_cpu:.2f})")
        if args.reference:
            refs = [ReferenceLXD(netns=ns.name).start(envs[0]), ReferenceLXD(netns=ns.name).start(envs[0])]
            renvs = [r.env for r in refs]
            pair(ns, renvs[0], renvs[1], 8445, 8446)
            fill(ns, renvs[0], "bench", args.mib)
            ref_copy, _ = time_copies(ns, renvs[0], renvs[1], args.rounds)
            print(f"lxc copy between two LXD 5.0.2 daemons   {ref_copy * 1000:8.0f} ms   ratio {ref_copy / floor:.2f}")
    finally:
        for ref in refs:
            ref.stop()
        for d in ours:
            d.cleanup()
        ns.delete()


if __name__ == "__main__":
    main()
