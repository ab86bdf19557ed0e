"""Soak: eight real `lxc` clients drive one daemon for a fixed time, with no errors, and the
daemon's open fds and memory stay flat.

Only with LXDTX_SOAK=1 (`make soak`); LXDTX_SOAK_SECONDS sets how long the load lasts (600).
"""

import collections
import csv
import os
import shutil
import statistics
import tempfile
import threading
import time

import pytest

from tests.daemonproc import Daemon

SECONDS = float(os.environ.get("LXDTX_SOAK_SECONDS", "600"))
CLIENTS = 8
SAMPLE_EVERY = 5
# Steady state starts after the first minute (a tenth of a short run): by then the thread
# pools, database connections and caches the load needs exist.
WARMUP = min(60.0, SECONDS / 10)
# Bounds a healthy daemon stays inside and a leaking one leaves. A healthy 600 s run made
# 1005 cycles; its busiest fd samples were 55 in the first steady quarter and 62 in the last,
# idle it held the 14 fds of the start again, and its RSS medians grew by 1.8%.
# - Under load the fd count moves with the requests, websockets and pipes in flight at the
#   sampling instant: the last quarter's busiest sample may exceed the first's by 10%, or by
#   2 fds per client if that is more. Idle again, the daemon holds what it held before the
#   load, give or take the same slack. One fd lost per container cycle adds about a thousand.
# - RSS is compared by the medians of those quarters, which ignore a burst: 10% is five
#   times a healthy run's growth, and a leak of 12 KiB per cycle (a cycle is about 34 HTTP
#   requests, so some 350 bytes per request) exceeds it.
FD_GROWTH = 0.10
FD_SLACK = 2 * CLIENTS
RSS_GROWTH = 0.10

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("LXDTX_SOAK") != "1",
        reason="soak test: run with LXDTX_SOAK=1 (`make soak`), LXDTX_SOAK_SECONDS=600 sets its length"),
    # The load ends at SECONDS; then each client finishes its cycle and everything is removed.
    pytest.mark.timeout(SECONDS + 300),
]

KINDS = ("launch", "exec", "push", "pull", "snapshot", "delete")


class Tally:
    """Operations and errors per kind, shared by the client threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ops = collections.Counter()
        self.errors = collections.Counter()
        self.failures = []

    def run(self, kind, name, call):
        """Run one operation; a failure is counted and kept, not raised. True if it worked."""
        try:
            call()
        except Exception as e:
            with self.lock:
                self.ops[kind] += 1
                self.errors[kind] += 1
                self.failures.append((time.strftime("%H:%M:%S"), kind, name, str(e)[:3000]))
            return False
        with self.lock:
            self.ops[kind] += 1
        return True


def _client(d, index, deadline, stop, tally, workdir):
    """One client: whole container cycles, with distinct names, until the deadline."""
    payload = os.urandom(4096) + f"client {index}\n".encode()
    source = os.path.join(workdir, f"push{index}")
    pulled = os.path.join(workdir, f"pull{index}")
    with open(source, "wb") as f:
        f.write(payload)
    cycle = 0
    while time.monotonic() < deadline and not stop.is_set():
        cycle += 1
        name = f"soak{index}-{cycle}"

        def exec_hi():
            out = d.lxc("exec", name, "--", "sh", "-c", "echo hi").stdout
            assert out == "hi\n", f"lxc exec {name} printed {out!r}"

        def pull():
            if os.path.exists(pulled):
                os.unlink(pulled)
            d.lxc("file", "pull", f"{name}/root/soak.bin", pulled)
            with open(pulled, "rb") as f:
                assert f.read() == payload, f"{name}/root/soak.bin came back different"

        if not tally.run("launch", name, lambda: d.lxc("launch", "busybox", name)):
            # Whatever a failed launch left behind, the check for leftovers at the end reports.
            d.lxc("delete", "--force", name, check=False)
            continue
        tally.run("exec", name, exec_hi)
        if tally.run("push", name, lambda: d.lxc("file", "push", source, f"{name}/root/soak.bin")):
            tally.run("pull", name, pull)
        tally.run("snapshot", name, lambda: d.lxc("snapshot", name, f"s{cycle}"))
        tally.run("delete", name, lambda: d.lxc("delete", "--force", name))


def _sample(pid):
    """Open fds, resident memory (KiB) and threads of process `pid`."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            status[key] = value.split()
    return fds, int(status["VmRSS"][0]), int(status["Threads"][0])


def _sampler(pid, start, stop, samples):
    """Every SAMPLE_EVERY seconds, from `start` until `stop` is set, append (t, fds, rss, threads)."""
    tick = 0
    while True:
        samples.append((round(time.monotonic() - start, 1), *_sample(pid)))
        tick += 1
        if stop.wait(max(0.0, start + tick * SAMPLE_EVERY - time.monotonic())):
            return


def _leftovers(d):
    """Containers, and static DHCP entries of managed networks, still there."""
    left = [url.rsplit("/", 1)[-1] for url in d.request("GET", "/1.0/containers").metadata]
    for network in d.request("GET", "/1.0/networks?recursion=1").metadata:
        hosts = os.path.join(d.dir, "networks", network["name"], "dnsmasq.hosts")
        if network.get("managed") and os.path.isdir(hosts):
            left += [f"{network['name']}/dnsmasq.hosts/{entry}" for entry in os.listdir(hosts)]
    return left


def _window(samples, low, high):
    return [s for s in samples if low <= s[0] < high]


def _report(samples, idle, tally, stem):
    """The measurement as text: operations and errors per kind, then the curves."""
    lines = ["", f"soak: {CLIENTS} clients for {SECONDS:.0f} s; samples every {SAMPLE_EVERY} s"
             f" in {stem}.csv, the daemon's log in {stem}.log"]
    lines.append("  " + "  ".join(f"{k}={tally.ops[k]}/{tally.errors[k]}" for k in KINDS) + "  (ops/errors)")
    lines.append(f"  {'t_s':>7} {'fds':>5} {'rss_kib':>8} {'threads':>7}")
    for t, fds, rss, threads in samples:
        lines.append(f"  {t:7.1f} {fds:5d} {rss:8d} {threads:7d}")
    lines.append(f"  idle after the load: fds={idle[1]} rss_kib={idle[2]} threads={idle[3]}")
    for when, kind, name, error in tally.failures[:20]:
        lines.append(f"  error {when} {kind} {name}: {error}")
    return "\n".join(lines)


def test_soak(capsys):
    """Parallel container cycles (launch, exec, file push and pull, snapshot, delete) for
    LXDTX_SOAK_SECONDS with no error; the daemon's fds and RSS do not grow."""
    if os.geteuid() != 0:
        pytest.skip("the soak test runs as root (containers, bridges, mounts)")
    d = Daemon(auto_init=True)
    workdir = tempfile.mkdtemp(prefix="lxdtx-soak-", dir="/var/tmp")
    stop = threading.Event()
    load_over = threading.Event()
    tally = Tally()
    samples = []
    threads = []
    stem = os.path.join("/tmp", f"lxdtx-soak-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        d.start(timeout=120)
        # The client writes its configuration on first use: once, not by eight at a time.
        d.lxc("list")
        pid = d.proc.pid
        start = time.monotonic()
        deadline = start + SECONDS
        sampler = threading.Thread(target=_sampler, args=(pid, start, load_over, samples), daemon=True)
        sampler.start()
        threads = [
            threading.Thread(target=_client, args=(d, i, deadline, stop, tally, workdir), daemon=True)
            for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        load_over.set()
        sampler.join()

        left = _leftovers(d)
        # Idle again: the fds of the last requests are closed once the daemon has had a moment.
        time.sleep(SAMPLE_EVERY)
        idle = (round(time.monotonic() - start, 1), *_sample(pid))

        with open(f"{stem}.csv", "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["t_s", "fds", "rss_kib", "threads"])
            out.writerows(samples)
            out.writerow(idle)
        with capsys.disabled():
            print(_report(samples, idle, tally, stem))

        # Every verdict, not just the first: a run takes ten minutes.
        problems = [f"{kind} {name}: {error}" for _, kind, name, error in tally.failures[:5]]
        if left:
            problems.append(f"left after every container was deleted: {left}")
        quarter = (SECONDS - WARMUP) / 4
        first = _window(samples, WARMUP, WARMUP + quarter)
        last = _window(samples, SECONDS - quarter, SECONDS + SAMPLE_EVERY / 2)
        assert first and last, samples
        busiest = max(s[1] for s in first)
        fd_bound = busiest + max(FD_SLACK, FD_GROWTH * busiest)
        if max(s[1] for s in last) > fd_bound:
            problems.append(f"open fds grew: at most {busiest} in the first steady quarter, then {last}")
        if idle[1] > samples[0][1] + FD_SLACK:
            problems.append(f"open fds idle: {samples[0][1]} before the load, {idle[1]} after it")
        rss_first = statistics.median(s[2] for s in first)
        rss_last = statistics.median(s[2] for s in last)
        if rss_last > rss_first * (1 + RSS_GROWTH):
            problems.append(f"RSS grew from a median of {rss_first} KiB to {rss_last} KiB")
        assert not problems, f"{len(tally.failures)} failed operations; " + "\n".join(problems)
    finally:
        stop.set()
        load_over.set()
        for thread in threads:
            thread.join(timeout=150)
        if os.path.exists(d.log_path):
            shutil.copyfile(d.log_path, f"{stem}.log")
        try:
            d.cleanup()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
