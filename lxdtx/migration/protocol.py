# -*- test-case-name: tests.integration.test_migration -*-
"""What every migration shares, whatever it moves (a container, a custom volume): the
operation that serves or dials the websockets, the sink's answer to the features the source
offers, and the end of a transfer, where each side reads the other's account of a failure.
"""

from lxdtx import errors
from lxdtx.migration import btrfsstream, rsyncstream, sockets
from lxdtx.migration import messages as m
from lxdtx.migration.channel import ChannelLost
from lxdtx.operations import WEBSOCKET

# How long the peer has to dial every websocket after the operation is made.
CONNECT_WAIT = 60
# The rsync features a sink takes when offered: not compression, which costs more than it
# saves on the links migrations run over here.
WANTED = frozenset({"xattrs", "delete", "bidirectional", "hardlinks_acls", "negotiation"})
# The websockets of a migration; a live one has `criu` too.
CHANNELS = ("control", "fs")
# How a transfer ends when a tool or the stream itself broke.
_BROKEN = (rsyncstream.RsyncFailed, btrfsstream.BtrfsFailed, ChannelLost)


def operation(daemon, description, resources, peer, work, finished=None, names=CHANNELS):
    """A task dialling the websockets `names` of `peer` (`sockets.peer_of`), or, with no
    peer, a websocket operation the peer (or a relaying client) dials. `await work(channels,
    op)` once they are open; `finished()` after, whatever happened."""
    if peer is not None:
        async def dialled(op):
            channels = {}
            try:
                channels = await sockets.dial_all(daemon, peer, names)
                await work(channels, op)
            finally:
                for channel in channels.values():
                    channel.close()
                if finished is not None:
                    finished()
            return {}

        return daemon.operations.start(description, resources=resources, run=dialled)
    served = sockets.ServedChannels(list(names))

    async def serving(op):
        try:
            await served.wait(daemon.reactor, CONNECT_WAIT)
            await work(served.channels, op)
        finally:
            served.close()
            if finished is not None:
                finished()
        return {}

    async def connect(op, request, secret):
        return served.connect(secret)

    op = daemon.operations.create(description, cls=WEBSOCKET, resources=resources, metadata=served.metadata(),
                                  run=serving, connect=connect)
    op.start()
    return op


def answer_features(offer, reply):
    """The rsync features both ends will use, set in the sink's `reply` to `offer`: the answer
    decides, except for a sender older than the negotiation, which uses its own fixed set."""
    offered = m.features_of(offer)
    if "bidirectional" not in offered:
        return set(offered)
    features = offered & WANTED
    m.set_features(reply, features)
    return features


async def outcome_soon(outcome, reactor, wait=2):
    """The peer's MigrationControl if it comes within `wait` seconds, else None."""
    try:
        return m.decode(m.MigrationControl, await outcome.addTimeout(wait, reactor))
    except Exception:
        return None


async def send(reactor, control, transfer, what):
    """Source side: run `transfer` (a coroutine: the fs sessions), then take the sink's outcome
    on `control`; 500 with the sink's message, or ours, when either side failed."""
    outcome = control.next_message()
    try:
        await transfer
    except _BROKEN as e:
        # The sink's own account of a failure beats ours of the stream it broke.
        said = await outcome_soon(outcome, reactor)
        if said is not None and not said.success:
            raise errors.InternalError(said.message or str(e)) from None
        control.send(m.MigrationControl(success=False, message=str(e)).SerializeToString())
        raise errors.InternalError(str(e)) from None
    try:
        result = m.decode(m.MigrationControl, await outcome)
    except ChannelLost:
        raise errors.InternalError("The target closed the migration without saying how it ended") from None
    if not result.success:
        raise errors.InternalError(result.message or f"The target failed to receive the {what}")


async def receive(reactor, control, transfer):
    """Sink side: run `transfer`; a broken stream is reported with the source's own message
    when the source sent one (only a failure of the source comes on `control` meanwhile)."""
    outcome = control.next_message()
    try:
        await transfer
    except _BROKEN as e:
        said = await outcome_soon(outcome, reactor)
        if said is not None and not said.success and said.message:
            raise errors.InternalError(f"The source failed: {said.message}") from None
        raise errors.InternalError(f"The transfer from the source failed: {e}") from None
