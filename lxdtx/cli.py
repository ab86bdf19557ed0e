# -*- test-case-name: tests.integration.test_daemon_process -*-
"""The `lxdtx` admin command: waitready, shutdown and other operator helpers.

This is a short-lived client of the daemon's unix socket, so it may block.
"""

import argparse
import http.client
import json
import os
import socket
import sys
import time

DEFAULT_DIR = os.environ.get("LXD_DIR", "/var/lib/lxdtx")


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over the daemon's unix socket."""

    def __init__(self, path, timeout=30):
        super().__init__("unix.socket", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def request(state_dir, method, path, body=None, timeout=30):
    """(status, decoded JSON) of one API call."""
    conn = UnixHTTPConnection(os.path.join(state_dir, "unix.socket"), timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None
    finally:
        conn.close()


def wait_ready(state_dir, timeout):
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, _ = request(state_dir, "GET", "/internal/ready", timeout=5)
            if status == 200:
                return True
        except (OSError, http.client.HTTPException, ValueError):
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def cmd_waitready(args):
    if wait_ready(args.dir, args.timeout):
        return 0
    print(f"lxdtx: daemon in {args.dir} not ready after {args.timeout}s", file=sys.stderr)
    return 1


def cmd_shutdown(args):
    try:
        status, body = request(args.dir, "PUT", "/internal/shutdown")
    except OSError as e:
        print(f"lxdtx: cannot reach the daemon in {args.dir}: {e}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"lxdtx: shutdown refused: {body and body.get('error')}", file=sys.stderr)
        return 1
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            request(args.dir, "GET", "/internal/ready", timeout=2)
        except (OSError, http.client.HTTPException, ValueError):
            return 0
        time.sleep(0.1)
    print(f"lxdtx: daemon still running after {args.timeout}s", file=sys.stderr)
    return 1


def _apply_preseed(state_dir, document):
    from lxdtx import preseed

    def call(method, path, body):
        return request(state_dir, method, path, body, timeout=600)

    try:
        checked = preseed.check(document)
        preseed.Applier(call).apply(checked)
    except preseed.PreseedError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"Error: cannot reach the daemon in {state_dir}: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_init_preseed(args):
    from lxdtx import preseed

    try:
        document = preseed.load(sys.stdin.read())
    except preseed.PreseedError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    return _apply_preseed(args.dir, document)


def cmd_init_interactive(args):
    from lxdtx import initquestions

    def exists(kind, name):
        status, _ = request(args.dir, "GET", f"/1.0/{kind}/{name}")
        return status != 404

    try:
        request(args.dir, "GET", "/1.0")
        asker = initquestions.Asker()
        answers = initquestions.ask(asker, exists)
        show = asker.boolean('Would you like a YAML "lxd init" preseed to be printed?', False)
    except OSError as e:
        print(f"Error: cannot reach the daemon in {args.dir}: {e}", file=sys.stderr)
        return 1
    except (EOFError, KeyboardInterrupt):
        print("\nAborted: nothing was changed", file=sys.stderr)
        return 1
    if show:
        print(initquestions.dump(answers))
    return _apply_preseed(args.dir, answers)


def cmd_init(args):
    if args.preseed and args.auto:
        print("Error: --auto and --preseed can't be used together", file=sys.stderr)
        return 2
    if args.preseed:
        return cmd_init_preseed(args)
    if not args.auto:
        return cmd_init_interactive(args)
    try:
        status, body = request(args.dir, "POST", "/internal/init", timeout=600)
    except OSError as e:
        print(f"lxdtx: cannot reach the daemon in {args.dir}: {e}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"lxdtx: init failed: {body and body.get('error')}", file=sys.stderr)
        return 1
    return 0


def cmd_image_busybox(args):
    from lxdtx.image import busybox

    try:
        image = busybox.build_image(args.out, compression=args.compression, arch=args.arch)
    except busybox.ImageBuildError as e:
        print(f"lxdtx: {e}", file=sys.stderr)
        return 1
    print(f"{image.path} {image.fingerprint}")
    return 0


def cmd_image_debian(args):
    from lxdtx.image import busybox, debian

    try:
        if args.cached:
            path = debian.cached_image(suite=args.suite, arch=args.arch, mirror=args.mirror,
                                       cache_dir=args.out or debian.CACHE_DIR)
            print(path)
            return 0
        if not args.out:
            print("lxdtx: an output file or directory is needed (or --cached)", file=sys.stderr)
            return 2
        image = debian.build_image(args.out, suite=args.suite, mirror=args.mirror, arch=args.arch)
    except busybox.ImageBuildError as e:
        print(f"lxdtx: {e}", file=sys.stderr)
        return 1
    print(f"{image.path} {image.fingerprint}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="lxdtx", description="lxdtx daemon administration")
    commands = parser.add_subparsers(dest="command", required=True)

    # Listed for --help; main() hands `daemon ...` to twistd before argparse sees it.
    commands.add_parser(
        "daemon", help="run the daemon in the foreground (then twistd lxdtx options: --dir, --https, --auto-init)")

    p = commands.add_parser("waitready", help="wait until the daemon answers API calls")
    p.add_argument("--dir", default=DEFAULT_DIR)
    p.add_argument("--timeout", type=float, default=60)
    p.set_defaults(func=cmd_waitready)

    p = commands.add_parser("shutdown", help="stop the containers, then the daemon")
    p.add_argument("--dir", default=DEFAULT_DIR)
    p.add_argument("--timeout", type=float, default=600)
    p.set_defaults(func=cmd_shutdown)

    p = commands.add_parser("init", help="configure the daemon: asks lxd init's questions, or --auto, or --preseed")
    p.add_argument("--auto", action="store_true",
                   help="non-interactive: the default pool, profile root disk and nic, busybox image")
    p.add_argument("--preseed", action="store_true",
                   help="apply the YAML preseed on stdin (lxd init --preseed's schema); all or nothing")
    p.add_argument("--dir", default=DEFAULT_DIR)
    p.set_defaults(func=cmd_init)

    p = commands.add_parser("image", help="build images locally, without network")
    images = p.add_subparsers(dest="image_command", required=True)
    p = images.add_parser("busybox", help="write a unified busybox image from /bin/busybox")
    p.add_argument("out", help="image file to write (or a directory to write it into)")
    p.add_argument("--compression", choices=("xz", "gzip", "none"), default="xz")
    p.add_argument("--arch", help="architecture to record (default: this machine's)")
    p.set_defaults(func=cmd_image_busybox)
    p = images.add_parser("debian", help="write a unified minimal Debian image (debootstrap minbase; root)")
    p.add_argument("out", nargs="?", help="image file to write (or a directory; with --cached the cache directory)")
    p.add_argument("--suite", default="bookworm")
    p.add_argument("--mirror", help="Debian mirror (default: the one this host's apt uses)")
    p.add_argument("--arch", help="architecture (default: this machine's)")
    p.add_argument("--cached", action="store_true",
                   help="print the path of the cached image (default cache /var/cache/lxdtx-test), built if missing")
    p.set_defaults(func=cmd_image_debian)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["daemon"]:
        from lxdtx import launch

        return launch.main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
