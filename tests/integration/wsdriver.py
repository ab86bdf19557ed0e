"""A websocket client process for the tests, on the daemon's own client side
(`lxdtx.websocket.client`), so the test can stop, freeze or measure it from outside.

    python -m tests.integration.wsdriver exec SOCKET OP_ID SECRETS_JSON [--pause SECONDS]
        connect an exec's sockets, end stdin, count the bytes of 1 and 2 (holding
        1 unread for SECONDS first); prints "connected", "paused", "resumed" and the
        counts as JSON, one line each
    python -m tests.integration.wsdriver events SOCKET LISTENERS MARKER
        LISTENERS subscribers of lifecycle events; prints "connected", then once the
        profile MARKER was created, each subscriber's event sources as JSON
    python -m tests.integration.wsdriver open URL [PEER_PEM_PATH [CERT KEY]]
        open URL (wss:// with the peer's certificate pinned, presenting CERT);
        prints "open" or "failed: REASON"
"""

import json
import sys

from twisted.internet import defer, task

from lxdtx.websocket.client import StreamClient, connect


def say(line):
    print(line, flush=True)


class Counter(StreamClient):
    """Counts a stream's bytes instead of keeping them."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def onMessage(self, payload, isBinary):
        if isBinary:
            self.count += len(payload)
        elif not payload and not self.received.called:
            self.received.callback(self.count)

    def onClose(self, wasClean, code, reason):
        if not self.received.called:
            self.received.callback(self.count)


async def run_exec(reactor, socket_path, op_id, secrets, pause):
    base = f"ws+unix://{socket_path}:/1.0/operations/{op_id}/websocket?secret="
    sockets = {}
    for name in ("control", "0", "1", "2"):
        sockets[name] = await connect(reactor, base + secrets[name], Counter)
    say("connected")
    sockets["0"].sendMessage(b"", False)
    if pause:
        sockets["1"].transport.pauseProducing()
        say("paused")
        await task.deferLater(reactor, pause, lambda: None)
        held = sockets["1"].count
        sockets["1"].transport.resumeProducing()
        say(f"resumed {held}")
    counts = {name: await sockets[name].received for name in ("1", "2")}
    say(json.dumps(counts))
    sockets["control"].sendClose(1000)


class Events(StreamClient):
    def __init__(self, marker):
        super().__init__()
        self.marker = marker
        self.sources = []

    def onMessage(self, payload, isBinary):
        event = json.loads(payload)
        if event.get("type") != "lifecycle":
            return
        source = event["metadata"]["source"]
        if source == f"/1.0/profiles/{self.marker}":
            if not self.received.called:
                self.received.callback(self.sources)
        else:
            self.sources.append(source)


async def run_events(reactor, socket_path, listeners, marker):
    url = f"ws+unix://{socket_path}:/1.0/events?type=lifecycle"
    subscribers = [await connect(reactor, url, lambda: Events(marker)) for _ in range(listeners)]
    say("connected")
    results = [await s.received for s in subscribers]
    say(json.dumps(results))
    for s in subscribers:
        s.sendClose(1000)


async def run_open(reactor, url, pin_path=None, cert_path=None, key_path=None):
    peer_pem = None
    if pin_path:
        with open(pin_path) as f:
            peer_pem = f.read()
    try:
        ws = await connect(reactor, url, peer_pem=peer_pem, cert_path=cert_path, key_path=key_path)
    except Exception as e:
        say(f"failed: {e}")
        return
    say("open")
    ws.sendClose(1000)


def main(reactor, mode, *args):
    if mode == "exec":
        socket_path, op_id, secrets = args[0], args[1], json.loads(args[2])
        pause = float(args[4]) if len(args) > 4 and args[3] == "--pause" else 0
        return defer.ensureDeferred(run_exec(reactor, socket_path, op_id, secrets, pause))
    if mode == "events":
        return defer.ensureDeferred(run_events(reactor, args[0], int(args[1]), args[2]))
    if mode == "open":
        return defer.ensureDeferred(run_open(reactor, *args))
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
