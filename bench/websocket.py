#!/usr/bin/env python3
"""Autobahn's native accelerations (NVX) against its pure-Python paths, on the work they
do for us: unmasking what clients send (stdin, file uploads) and checking UTF-8 of
text frames (the exec `control` socket, console control).

    bench/websocket.py [--mib 64]

Runs itself once with AUTOBAHN_USE_NVX=0 and once with it on (Autobahn reads the
variable at import), and prints MiB/s of each and the ratio.
"""

import argparse
import json
import os
import subprocess
import sys
import time


def measure(mib):
    from autobahn.websocket import utf8validator, xormasker

    data = os.urandom(1024 * 1024) * mib
    text = ("é" * (512 * 1024)).encode() * mib  # two-byte sequences: the validator's real work
    masker = xormasker.create_xor_masker(os.urandom(4), len(data))
    start = time.perf_counter()
    for offset in range(0, len(data), 65536):  # frames of the size a pipe read gives
        masker.process(data[offset:offset + 65536])
    unmask = mib / (time.perf_counter() - start)
    validator = utf8validator.Utf8Validator()
    start = time.perf_counter()
    for offset in range(0, len(text), 65536):
        assert validator.validate(text[offset:offset + 65536])[0]
    utf8 = mib / (time.perf_counter() - start)
    return {"nvx": xormasker.USES_NVX, "unmask": unmask, "utf8": utf8}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.mib)))
        return
    results = {}
    for flag in ("0", "1"):
        out = subprocess.run([sys.executable, __file__, "--child", "--mib", str(args.mib)], check=True,
                             capture_output=True, env=dict(os.environ, AUTOBAHN_USE_NVX=flag)).stdout
        results[flag] = json.loads(out)
    plain, nvx = results["0"], results["1"]
    if not nvx["nvx"]:
        print("NVX is not available in this Autobahn build")
    for key, label in (("unmask", "unmask client frames"), ("utf8", "validate UTF-8 text")):
        print(f"{label:24}python {plain[key]:10.1f} MiB/s   nvx {nvx[key]:10.1f} MiB/s"
              f"   x{nvx[key] / plain[key]:.1f}")


if __name__ == "__main__":
    main()
