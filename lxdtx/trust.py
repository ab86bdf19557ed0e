# -*- test-case-name: tests.unit.test_trust -*-
"""Who is trusted: unix socket peers, and TLS peers whose certificate is in the trust store.

In PKI mode (`DIR/server.ca` exists) a client certificate must also chain to
that CA and not be revoked by `DIR/ca.crl`.
"""

import datetime
import os

from twisted.logger import Logger

from lxdtx import tls

KIND = "certificate"


class PeerCertificate:
    """What the trust check needs of a TLS peer's certificate, computed once per connection."""

    __slots__ = ("der", "fingerprint", "not_before", "not_after", "x509", "chains")

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
        now = datetime.datetime.now(datetime.timezone.utc)
        return self.not_before <= now <= self.not_after


class Trust:
    """Trust decisions for the router and the certificates API."""

    log = Logger()

    def __init__(self, store, state_dir):
        self._store = store
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
        channel = http.channel
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
        if http.channel.site.local:
            return True
        peer = self.peer(http)
        return (
            peer is not None
            and self._store.exists(KIND, peer.fingerprint)
            and self.certificate_acceptable(peer)
        )
