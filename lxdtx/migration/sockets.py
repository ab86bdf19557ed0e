# -*- test-case-name: tests.integration.test_migration -*-
"""The websockets of a migration, on Autobahn, at either end: the side that owns the
websocket operation serves them (the source in pull mode, the sink in push mode, both in
relay mode, where the client joins them); the other dials them (`lxdtx.websocket.client`)
with the owner's certificate pinned. Each carries a `Channel`.
"""

import secrets as _secrets

from autobahn.twisted.websocket import WebSocketClientProtocol
from twisted.internet import defer

from lxdtx import errors
from lxdtx.migration.channel import Channel
from lxdtx.websocket import client
from lxdtx.websocket.server import StreamSocket


class _Streamed:
    """On a channel that `streams`, binary payload goes on as Autobahn parses it (its frame
    streaming API), not joined into whole messages first: a stream has no message boundaries
    worth a copy. Frame and message size limits still hold (Autobahn checks them as frames begin)."""

    _streamed = False

    def dataReceived(self, data):
        # Autobahn's own first builds the three values of a debug message (whatever the log
        # level) at every read, which a stream makes thousands of times a second.
        self._dataReceived(data)

    def onMessageBegin(self, isBinary):
        super().onMessageBegin(isBinary)
        self._streamed = isBinary and self.channel.streams

    def onMessageFrameData(self, payload):
        if not self._streamed:
            super().onMessageFrameData(payload)
        elif not self.failedByMe and payload:
            self.channel.received(payload, True)

    def onMessageEnd(self):
        if not self._streamed:
            super().onMessageEnd()
        self._streamed = False
        self.message_data = None


class ChannelSocket(_Streamed, StreamSocket):  # type: ignore[misc]  # Autobahn's own two bases disagree
    """Server side of one migration websocket."""

    def __init__(self, channel):
        super().__init__()
        self.channel = channel

    def opened(self):
        self.channel.attach(self)
        self.channel.connected()

    def message(self, payload, binary):
        self.channel.received(payload, binary)

    def closed(self, abnormal):
        self.channel.lost()

    def peer_gone(self):
        self.channel.lost()


class ServedChannels:
    """The websockets a migration operation serves: one secret each, each used once."""

    def __init__(self, names):
        self.secrets = {name: _secrets.token_hex(32) for name in names}
        self.channels = {name: Channel(name) for name in names}
        self._taken = set()

    def metadata(self):
        return dict(self.secrets)

    def connect(self, secret):
        """(protocol, claim) of the websocket for `secret` (403 for any other, or one used already)."""
        for name, expected in self.secrets.items():
            if _secrets.compare_digest(secret or "", expected) and name not in self._taken:
                channel = self.channels[name]

                def claim(name=name):
                    if name in self._taken:
                        raise errors.Forbidden()
                    self._taken.add(name)

                return ChannelSocket(channel), claim
        raise errors.Forbidden()

    async def wait(self, reactor, timeout):
        """Until every websocket is open; 500 if the peer has not dialled them all in `timeout`."""
        deadline = reactor.seconds() + timeout
        for channel in self.channels.values():
            try:
                await channel.when_open().addTimeout(max(0.0, deadline - reactor.seconds()), reactor)
            except defer.TimeoutError:
                raise errors.InternalError("The peer did not connect to the migration websockets in time") from None

    def close(self, abort=False):
        for channel in self.channels.values():
            channel.close(abort=abort)


class ChannelClient(_Streamed, WebSocketClientProtocol):  # type: ignore[misc]  # as above
    channel = None

    def onOpen(self):
        self.channel.attach(self)
        self.channel.connected()

    def onMessage(self, payload, isBinary):
        self.channel.received(payload, isBinary)

    def onClose(self, wasClean, code, reason):
        self.channel.lost()


def peer_of(spec, field):
    """{"url", "secrets", "certificate"} of the peer's operation named in a request's `field`
    (`source` of a sink in pull mode, `target` of a source in push mode); 400 naming what is wrong."""
    if not isinstance(spec, dict):
        raise errors.BadRequest(f"Invalid value for \"{field}\": must be an object")
    url = spec.get("operation")
    if not isinstance(url, str) or not url.startswith("https://"):
        raise errors.BadRequest(f"Invalid value for \"{field}.operation\": must be an https URL")
    secrets = spec.get("secrets")
    if not isinstance(secrets, dict):
        raise errors.BadRequest(f"Invalid value for \"{field}.secrets\": must be an object")
    for key in ("control", "fs"):
        if not isinstance(secrets.get(key), str) or not secrets[key]:
            raise errors.BadRequest(f"Missing secret \"{key}\" in \"{field}.secrets\"")
    certificate = spec.get("certificate")
    if certificate is not None and not isinstance(certificate, str):
        raise errors.BadRequest(f"Invalid value for \"{field}.certificate\": must be a string")
    return {"url": url, "secrets": secrets, "certificate": certificate or None}


async def dial_all(daemon, peer, names):
    """{name: channel} of the peer's websockets, dialled in order (control first)."""
    channels = {}
    try:
        for name in names:
            try:
                channels[name] = await dial(daemon.reactor, peer["url"], peer["secrets"][name], name,
                                            peer["certificate"], daemon.cert_path, daemon.key_path)
            except errors.ApiError:
                raise
            except Exception as e:
                raise errors.InternalError(f"Could not connect to the peer's {name} websocket: "
                                           f"{errors.describe(e)}") from None
    except BaseException:
        for channel in channels.values():
            channel.close()
        raise
    return channels


async def dial(reactor, operation_url, secret, name, peer_pem, cert_path, key_path):
    """The channel of the source's websocket `name` (`operation_url` is https://.../1.0/operations/ID)."""
    if not operation_url.startswith("https://"):
        raise errors.BadRequest(f"Invalid source operation URL: {operation_url}")
    url = "wss://" + operation_url[len("https://"):].rstrip("/") + f"/websocket?secret={secret}"
    channel = Channel(name)
    protocol = type("Client", (ChannelClient,), {"channel": channel})
    await client.connect(reactor, url, protocol, peer_pem=peer_pem, cert_path=cert_path, key_path=key_path)
    return channel
