# -*- test-case-name: tests.unit.test_trust -*-
"""Who is trusted: unix socket peers, TLS peers whose certificate is in the trust store,
and, with core.macaroon.endpoint set, HTTPS requests whose macaroons prove a Candid login
(lxdtx.candid).

In PKI mode (`DIR/server.ca` exists) a client certificate must also chain to
that CA and not be revoked by `DIR/ca.crl`.

Also the bounds on those not trusted: how many of their TLS connections may be
open (`UntrustedConnections`), and how often an address may get the trust
password wrong (`PasswordAttempts`).
"""

import datetime
import os

from twisted.logger import Logger

from lxdtx import tls

KIND = "certificate"


class PeerCertificate:
    """What the trust check needs of a TLS peer's certificate, computed once per connection."""

    __slots__ = ("chains", "der", "fingerprint", "not_after", "not_before", "x509")

    def __init__(self, x509):
        from OpenSSL import crypto

        self.x509 = x509
        self.der = crypto.dump_certificate(crypto.FILETYPE_ASN1, x509)
        self.fingerprint = tls.fingerprint(self.der)
        cert = x509.to_cryptography()
        self.not_before = cert.not_valid_before_utc
        self.not_after = cert.not_valid_after_utc
        self.chains = None

    def in_validity_period(self):
        now = datetime.datetime.now(datetime.UTC)
        return self.not_before <= now <= self.not_after


class Trust:
    """Trust decisions for the router and the certificates API."""

    log = Logger()

    def __init__(self, store, state_dir, candid=None):
        self._store = store
        self.candid = candid  # Candid logins (lxdtx.candid.Candid), or None
        self._ca_store = None
        ca_path = os.path.join(state_dir, "server.ca")
        if os.path.exists(ca_path):
            self._ca_store = self._load_ca(ca_path, os.path.join(state_dir, "ca.crl"))
            self.log.info("CA mode: client certificates must be signed by {ca}", ca=ca_path)

    @property
    def pki(self):
        return self._ca_store is not None

    @staticmethod
    def _load_ca(ca_path, crl_path):
        from cryptography import x509
        from OpenSSL import crypto

        store = crypto.X509Store()
        with open(ca_path, "rb") as f:
            store.add_cert(crypto.X509.from_cryptography(x509.load_pem_x509_certificate(f.read())))
        if os.path.exists(crl_path):
            with open(crl_path, "rb") as f:
                data = f.read()
            crl = x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
            store.add_crl(crl)
            store.set_flags(crypto.X509StoreFlags.CRL_CHECK)
        return store

    def is_unix(self, http):
        return http.channel.site.local

    def peer(self, http):
        """The PeerCertificate of a TLS request, cached on its connection, or None."""
        return self.channel_peer(http.channel)

    def channel_peer(self, channel):
        """The PeerCertificate of a TLS connection (once its handshake is done), or None."""
        cached = getattr(channel, "_lxdtx_peer", False)
        if cached is not False:
            return cached
        peer = None
        get = getattr(channel.transport, "getPeerCertificate", None)
        x509 = get() if get else None
        if x509 is not None:
            peer = PeerCertificate(x509)
        channel._lxdtx_peer = peer
        return peer

    def chains_to_ca(self, peer):
        if self._ca_store is None:
            return True
        if peer.chains is None:
            from OpenSSL import crypto

            try:
                crypto.X509StoreContext(self._ca_store, peer.x509).verify_certificate()
                peer.chains = True
            except crypto.X509StoreContextError:
                peer.chains = False
        return peer.chains

    def certificate_acceptable(self, peer):
        """A TLS peer certificate that could be trusted: in its validity period, CA-signed in PKI mode."""
        return peer is not None and peer.in_validity_period() and self.chains_to_ca(peer)

    def is_trusted(self, http):
        """Whether this request is trusted: by its connection, or by its macaroons (lxdtx.candid).

        With core.macaroon.endpoint set, a request that speaks the bakery protocol
        is judged by its macaroons alone, as LXD does; other requests by their
        connection's certificate.
        """
        if http.channel.site.local:
            return True
        if self.candid is not None and self.candid.applies(http):
            return self.candid.authenticate(http)
        return self.channel_trusted(http.channel)

    def channel_trusted(self, channel):
        """Whether requests of this connection are trusted (a unix socket's always are)."""
        if channel.site.local:
            return True
        peer = self.channel_peer(channel)
        return (
            peer is not None
            and self._store.exists(KIND, peer.fingerprint)
            and self.certificate_acceptable(peer)
        )


class UntrustedConnections:
    """The TLS connections not known to be trusted, within caps (see lxdtx.router.ApiChannel).

    A connection is pending from its accept until its handshake is done. Then a
    trusted one is no longer counted, and is never refused; an untrusted one is
    admitted while fewer than `total` untrusted connections are open, and fewer
    than `per_peer` from its address. Pending connections are not refused either
    (they may turn out trusted), but past `pending` of them the oldest, whose
    handshake has taken longest, is dropped.
    """

    def __init__(self, total=64, per_peer=8, pending=256, handshake_timeout=10.0, request_timeout=30.0):
        self.total = total
        self.per_peer = per_peer
        self.pending = pending
        self.handshake_timeout = handshake_timeout
        self.request_timeout = request_timeout
        self._pending = {}  # connection -> None, oldest first
        self._untrusted = {}  # connection -> peer address
        self._by_peer = {}  # peer address -> number of untrusted connections

    def connecting(self, connection):
        """Count a new connection as pending; returns the pending ones to drop."""
        self._pending[connection] = None
        dropped = []
        while len(self._pending) > self.pending:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            dropped.append(oldest)
        return dropped

    def admit(self, connection, peer):
        """Count a connection whose handshake showed no trusted certificate; False past a cap."""
        self._pending.pop(connection, None)
        if connection in self._untrusted:
            return True
        if len(self._untrusted) >= self.total or self._by_peer.get(peer, 0) >= self.per_peer:
            return False
        self._untrusted[connection] = peer
        self._by_peer[peer] = self._by_peer.get(peer, 0) + 1
        return True

    def release(self, connection):
        """The connection is trusted, closed, or no longer HTTP: not counted any more."""
        self._pending.pop(connection, None)
        peer = self._untrusted.pop(connection, None)
        if peer is not None:
            left = self._by_peer[peer] - 1
            if left:
                self._by_peer[peer] = left
            else:
                del self._by_peer[peer]

    def untrusted_count(self, peer=None):
        return len(self._untrusted) if peer is None else self._by_peer.get(peer, 0)

    def pending_count(self):
        return len(self._pending)


class PasswordAttempts:
    """Trust password attempts per peer address; an address with too many wrong is refused a while.

    `max_failures` wrong passwords within `window` seconds block the address for
    `cooldown` seconds, during which its attempts are refused without checking
    the password. Checks still running count as failures until they end, so a
    burst in parallel gets no more tries than one in a row. A right password
    forgets the address. At most `max_peers` addresses are remembered (the
    longest quiet ones go first).
    """

    def __init__(self, clock, max_failures=5, window=60.0, cooldown=60.0, max_peers=4096):
        self._clock = clock
        self.max_failures = max_failures
        self.window = window
        self.cooldown = cooldown
        self.max_peers = max_peers
        self._failures = {}  # peer -> times of its recent failures, oldest peer first
        self._blocked = {}  # peer -> end of its cooldown
        self._checking = {}  # peer -> checks running

    def blocked(self, peer):
        """Whether `peer` is in its cooldown."""
        until = self._blocked.get(peer)
        if until is None:
            return False
        if self._clock.seconds() < until:
            return True
        del self._blocked[peer]
        return False

    def begin(self, peer):
        """Whether `peer` may have its password checked now; if so, the check counts as running."""
        if self.blocked(peer):
            return False
        now = self._clock.seconds()
        recent = sum(1 for t in self._failures.get(peer, ()) if now - t < self.window)
        running = self._checking.get(peer, 0)
        if recent + running >= self.max_failures:
            return False
        self._checking[peer] = running + 1
        return True

    def _end(self, peer):
        running = self._checking.pop(peer, 0) - 1
        if running > 0:
            self._checking[peer] = running

    def failed(self, peer):
        """A check of `peer` ended with a wrong password."""
        self._end(peer)
        now = self._clock.seconds()
        times = [t for t in self._failures.pop(peer, ()) if now - t < self.window]
        times.append(now)
        if len(times) >= self.max_failures:
            self._blocked[peer] = now + self.cooldown
        else:
            self._failures[peer] = times
        self._forget_old(now)

    def succeeded(self, peer):
        """A check of `peer` ended with the right password: its record is cleared."""
        self._end(peer)
        self._failures.pop(peer, None)
        self._blocked.pop(peer, None)

    def abandoned(self, peer):
        """A check of `peer` could not be made (an error): neither right nor wrong."""
        self._end(peer)

    def _forget_old(self, now):
        """Keep each table within `max_peers`: expired entries go first, then the oldest
        (never the newest, the address just recorded)."""
        if len(self._blocked) > self.max_peers:
            for peer in [p for p, until in self._blocked.items() if until <= now]:
                del self._blocked[peer]
            while len(self._blocked) > self.max_peers:
                del self._blocked[next(iter(self._blocked))]  # the one whose cooldown ends first
        if len(self._failures) > self.max_peers:
            for peer in [p for p, times in self._failures.items() if now - times[-1] >= self.window]:
                del self._failures[peer]
            while len(self._failures) > self.max_peers:
                del self._failures[next(iter(self._failures))]  # the longest quiet
