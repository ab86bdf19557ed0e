# -*- test-case-name: tests.unit.test_websocket -*-
"""Autobahn protocol options, chosen once for every websocket of the daemon.

Frames and messages: LXD peers send stream chunks of at most a few MiB (the
`lxc` client's stdin reads, rsync's writes); anything far larger is a peer
trying to make us buffer it, refused with close code 1009.

Pings find peers that went away without a word (a laptop closed mid-exec, a
frozen process): a ping unanswered for `PING_TIMEOUT` drops the connection.
Only sockets the peer reads are pinged (a pong is written by the peer's reader):
the `lxc` client never reads exec stdin or `control`, and a ping there would end
healthy sessions. Any frame from the peer counts as an answer.
"""

MAX_FRAME = 16 * 1024 * 1024
MAX_MESSAGE = 64 * 1024 * 1024
PING_INTERVAL = 15.0
PING_TIMEOUT = 15.0
# The peer has this long to finish its opening handshake (our client side: the server's).
OPEN_HANDSHAKE_TIMEOUT = 10.0
# After a close frame, the peer has this long to answer before the connection is dropped.
CLOSE_HANDSHAKE_TIMEOUT = 5.0


def common(ping, ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT):
    """Options for `setProtocolOptions` of either side; `ping`: whether to ping the peer."""
    return {
        "maxFramePayloadSize": MAX_FRAME,
        "maxMessagePayloadSize": MAX_MESSAGE,
        "openHandshakeTimeout": OPEN_HANDSHAKE_TIMEOUT,
        "closeHandshakeTimeout": CLOSE_HANDSHAKE_TIMEOUT,
        "autoPingInterval": ping_interval if ping else 0,
        "autoPingTimeout": ping_timeout if ping else 0,
        "autoPingRestartOnAnyTraffic": True,
        # Binary streams are not compressed by LXD either, and inflating is a memory risk.
        "perMessageCompressionAccept": lambda offers: None,
    }


def server(ping, **timing):
    # RFC 6455 only, as LXD (Autobahn also speaks the hybi-10 draft, version 8).
    return {**common(ping, **timing), "versions": [13], "webStatus": False, "requireMaskedClientFrames": True}


def client(ping, **timing):
    options = common(ping, **timing)
    del options["perMessageCompressionAccept"]
    return {**options, "perMessageCompressionOffers": []}
