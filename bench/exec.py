#!/usr/bin/env python3
"""`lxc exec c -- true` against `lxc-attach -- true` on the same container, and `lxc file push`.

    bench/exec.py [--dir DIR] [--rounds 50] [--push-mib 100]

Without --dir a temporary daemon is started (`twistd -n lxdtx --auto-init`) and
removed afterwards. Prints medians, back to back and paced, against the liblxc
floor and the `lxc` client's own start-up (`lxc version` against the daemon,
run in turns with `lxc exec`). Our exec does not run `lxc-attach` (a fork of the
container's exec zygote is the command), so it can come in under that floor.
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

from tests.daemonproc import Daemon  # noqa: E402


def once(argv, env=None):
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.decode()}")
    return (time.perf_counter() - start) * 1000


def median_ms(argv, rounds, env=None):
    return statistics.median(once(argv, env) for _ in range(rounds))


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
    try:
        subprocess.run(["lxc", "launch", "busybox", name], env=env, check=True, capture_output=True)
        lxcpath = os.path.join(state_dir, "lxc")
        # Warm both paths up.
        median_ms(["lxc", "exec", name, "--", "true"], 3, env)
        median_ms(["lxc-attach", "-n", name, "-P", lxcpath, "--clear-env", "--", "true"], 3)

        attach = ["lxc-attach", "-n", name, "-P", lxcpath, "--clear-env", "--", "true"]
        exec_true = ["lxc", "exec", name, "--", "true"]
        attach_b2b = median_ms(attach, args.rounds)
        # In turns, so that the machine's drift over the run falls on both alike.
        client_b2b, ours_b2b = interleaved([(["lxc", "version"], env), (exec_true, env)], args.rounds)
        floor, client, ours = interleaved([(attach, None), (["lxc", "version"], env), (exec_true, env)],
                                          args.rounds, args.gap)
        print(f"{'':30}{'back to back':>14}{f'paced {args.gap * 1000:.0f} ms':>16}")
        print(f"{'lxc-attach -- true (floor)':30}{attach_b2b:11.2f} ms{floor:13.2f} ms")
        print(f"{'lxc version (client start)':30}{client_b2b:11.2f} ms{client:13.2f} ms")
        print(f"{'lxc exec -- true':30}{ours_b2b:11.2f} ms{ours:13.2f} ms")
        print(f"{'  ratio to lxc-attach':30}{ours_b2b / attach_b2b:14.2f}{ours / floor:16.2f}")
        print(f"{'  beyond client start':30}{ours_b2b - client_b2b:11.2f} ms{ours - client:13.2f} ms")

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
        shutil.rmtree(work, ignore_errors=True)
        if daemon is not None:
            daemon.cleanup()


if __name__ == "__main__":
    main()
