"""Time `interfaces(pid)` (the `network` part of a container's state) against the hand-written
rtnetlink reader it replaced, read from git history, on this process's own network namespace.

    PYTHONPATH=. python bench/netlink.py [rounds]
"""

import importlib.util
import os
import subprocess
import sys
import tempfile
import time

from lxdtx.instance import netlink

HAND_WRITTEN = "1b17c45:lxdtx/instance/netlink.py"


def _hand_written():
    source = subprocess.run(["git", "show", HAND_WRITTEN], check=True, capture_output=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout
    with tempfile.NamedTemporaryFile(suffix=".py") as f:
        f.write(source)
        f.flush()
        spec = importlib.util.spec_from_file_location("hand_written_netlink", f.name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def _per_call(fn, rounds):
    fn(os.getpid())
    start = time.perf_counter()
    for _ in range(rounds):
        fn(os.getpid())
    return (time.perf_counter() - start) / rounds * 1e3


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    hand = _hand_written()
    state = netlink.interfaces(os.getpid())
    print(f"host netns: {len(state)} links, {sum(len(i['addresses']) for i in state.values())} addresses, "
          f"{rounds} rounds")
    ours, theirs = _per_call(netlink.interfaces, rounds), _per_call(hand.interfaces, rounds)
    print(f"pyroute2     {ours:.3f} ms per call")
    print(f"hand-written {theirs:.3f} ms per call")
    print(f"ratio        {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
