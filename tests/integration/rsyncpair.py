"""Run by test_migration_rsync in a process of its own (it needs a reactor): the two ends of
`lxdtx.migration.rsyncstream` joined by two in-memory channels, real rsync at both ends.

    python -m tests.integration.rsyncpair SOCKET_DIR TARGET SOURCE [SOURCE...]

Each SOURCE directory goes as one session, back to back on the same channel pair, into
TARGET/<index>, with the rsync flags of `--features` (names as in the migration header).
With `--lose-after N` the channels are lost after N bytes: the command
exits 3 if both ends failed cleanly. Exit 0 when every session arrived.
"""

import argparse
import os
import sys

from twisted.internet import defer, task

from lxdtx.migration import rsyncstream
from lxdtx.migration.channel import Channel


class Link:
    """One end's protocol: frames sent arrive at the other end's channel a turn later."""

    def __init__(self, reactor, budget):
        self.reactor = reactor
        self.peer = None
        self.budget = budget  # [bytes left before the link breaks] shared by both ends
        self.channel = None

    def sendMessage(self, payload, binary):
        if self.budget[0] is not None:
            self.budget[0] -= len(payload)
            if self.budget[0] < 0:
                self.reactor.callLater(0, self.channel.lost)
                self.reactor.callLater(0, self.peer.channel.lost)
                return
        self.reactor.callLater(0, self.peer.channel.received, payload, binary)

    def sendClose(self, code):
        self.reactor.callLater(0, self.channel.lost)
        self.reactor.callLater(0, self.peer.channel.lost)

    dropConnection = sendClose


def pair(reactor, budget):
    a, b = Link(reactor, budget), Link(reactor, budget)
    a.peer, b.peer = b, a
    ends = []
    for link in (a, b):
        link.channel = Channel("fs")
        link.channel.attach(link)
        ends.append(link.channel)
    return ends


async def main(reactor, args):
    budget = [args.lose_after]
    features = set(args.features.split(",")) if args.features else set()
    sending, receiving = pair(reactor, budget)
    for index, source in enumerate(args.sources):
        target = os.path.join(args.target, str(index))
        os.makedirs(target)
        results = await defer.DeferredList([
            defer.Deferred.fromCoroutine(rsyncstream.send(reactor, sending, source, f"source {index}",
                                                          args.socket_dir, features)),
            defer.Deferred.fromCoroutine(rsyncstream.receive(reactor, receiving, target, f"target {index}",
                                                             features)),
        ], consumeErrors=True)
        failures = [result for ok, result in results if not ok]
        if failures:
            for failure in failures:
                print(f"{failure.type.__name__}: {failure.value}", file=sys.stderr)
            sys.exit(3 if len(failures) == 2 and args.lose_after is not None else 1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("socket_dir")
    parser.add_argument("target")
    parser.add_argument("sources", nargs="+")
    parser.add_argument("--lose-after", type=int, default=None)
    parser.add_argument("--features", default="xattrs,delete,bidirectional,hardlinks_acls")
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, parser.parse_args())))
