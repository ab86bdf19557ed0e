"""The server certificate, the TLS context (handshake in memory) and trust decisions incl. PKI mode."""

import datetime
import ipaddress
import os
import stat

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL, crypto
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from lxdtx import tls
from lxdtx.state import Put
from lxdtx.state.store import MemoryStore
from lxdtx.trust import KIND, PeerCertificate, Trust
from tests import pki
from tests.unit.fakes import temp_dir


class CertificateTests(SynchronousTestCase):
    """The daemon's own keypair and the PEM/DER/fingerprint helpers."""

    def setUp(self):
        self.dir = temp_dir(self)
        self.cert_path = os.path.join(self.dir, "server.crt")
        self.key_path = os.path.join(self.dir, "server.key")

    def test_generated_keypair(self):
        """EC P-384, ~10 years, DNS SAN plus loopback IP SANs, serverAuth, key readable by root only."""
        tls.generate_keypair(self.cert_path, self.key_path)
        with open(self.cert_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        self.assertIsInstance(cert.public_key(), ec.EllipticCurvePublicKey)
        self.assertEqual(cert.public_key().curve.name, "secp384r1")
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        self.assertGreater(lifetime, datetime.timedelta(days=3600))
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertTrue(sans.get_values_for_type(x509.DNSName))
        self.assertEqual(set(sans.get_values_for_type(x509.IPAddress)),
                         {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")})
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        self.assertIn(x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, list(usage))
        self.assertEqual(stat.S_IMODE(os.stat(self.key_path).st_mode), 0o600)

    def test_kept_across_starts(self):
        """An existing keypair is reused: nothing is spawned, the result is at once."""
        tls.generate_keypair(self.cert_path, self.key_path)
        with open(self.cert_path) as f:
            first = f.read()
        self.successResultOf(defer.ensureDeferred(tls.ensure_keypair(self.cert_path, self.key_path)))
        with open(self.cert_path) as f:
            self.assertEqual(f.read(), first)

    def test_pem_der_fingerprint(self):
        """PEM and DER convert both ways; the fingerprint is SHA-256 of the DER."""
        pair = pki.client_cert()
        self.assertEqual(tls.pem_to_der(pair.cert_pem), pair.der)
        self.assertEqual(tls.pem_to_der(tls.der_to_pem(pair.der)), pair.der)
        self.assertEqual(tls.fingerprint(pair.der), pair.fingerprint)
        self.assertRaises(ValueError, tls.pem_to_der, "no certificate here")


def _exchange(client, server):
    """One round of an in-memory TLS conversation: each side steps its handshake, then the
    bytes each wrote are handed to the other."""
    for conn in (client, server):
        try:
            conn.do_handshake()
        except SSL.WantReadError:
            pass
    for src, dst in ((client, server), (server, client)):
        try:
            dst.bio_write(src.bio_read(65536))
        except SSL.WantReadError:
            pass


def _read_pending(*conns):
    """Let each connection read what waits after the handshake (TLS 1.3 session tickets)."""
    for conn in conns:
        try:
            conn.recv(1)
        except SSL.WantReadError:
            pass


def _handshake(server_ctx, client_ctx):
    """Run a TLS handshake between two pyOpenSSL contexts in memory; returns (server, client)."""
    server = SSL.Connection(server_ctx, None)
    server.set_accept_state()
    client = SSL.Connection(client_ctx, None)
    client.set_connect_state()
    for _ in range(20):
        _exchange(client, server)
        if server.get_peer_certificate() is not None and client.get_protocol_version_name() == "TLSv1.3":
            _read_pending(server)
            return server, client
    raise AssertionError("handshake did not complete")


class ContextTests(SynchronousTestCase):
    """The HTTPS context speaks TLS 1.3 and accepts any client certificate at handshake time."""

    def test_tls13_with_unknown_client_certificate(self):
        """A self-signed, unknown client certificate is received, not refused."""
        directory = temp_dir(self)
        cert_path, key_path = os.path.join(directory, "s.crt"), os.path.join(directory, "s.key")
        tls.generate_keypair(cert_path, key_path)
        server_ctx = tls.ServerContextFactory(cert_path, key_path).getContext()
        client = pki.client_cert()
        client_ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        client_ctx.use_certificate(client.cert)
        client_ctx.use_privatekey(client.key)
        server, conn = _handshake(server_ctx, client_ctx)
        self.assertEqual(conn.get_protocol_version_name(), "TLSv1.3")
        self.assertEqual(PeerCertificate(server.get_peer_certificate()).fingerprint, client.fingerprint)

    def test_no_tls_below_1_2(self):
        """TLS 1.1 clients are refused."""
        directory = temp_dir(self)
        cert_path, key_path = os.path.join(directory, "s.crt"), os.path.join(directory, "s.key")
        tls.generate_keypair(cert_path, key_path)
        server_ctx = tls.ServerContextFactory(cert_path, key_path).getContext()
        client_ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        client_ctx.set_max_proto_version(SSL.TLS1_1_VERSION)
        self.assertRaises(SSL.Error, _handshake, server_ctx, client_ctx)


    def test_no_renegotiation(self):
        """The context refuses renegotiation: a TLS 1.2 client asking for one is told no."""
        directory = temp_dir(self)
        cert_path, key_path = os.path.join(directory, "s.crt"), os.path.join(directory, "s.key")
        tls.generate_keypair(cert_path, key_path)
        server_ctx = tls.ServerContextFactory(cert_path, key_path).getContext()
        self.assertTrue(server_ctx.set_options(0) & SSL.OP_NO_RENEGOTIATION)  # adding nothing: the options
        client_ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        client_ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
        server = SSL.Connection(server_ctx, None)
        server.set_accept_state()
        client = SSL.Connection(client_ctx, None)
        client.set_connect_state()
        _pump(client, server)
        self.assertEqual(client.get_protocol_version_name(), "TLSv1.2")
        self.assertTrue(client.renegotiate())
        errors = _pump(client, server)
        self.assertIn("no renegotiation", repr(errors[("client", "handshake")]))
        self.assertEqual(server.total_renegotiations(), 0)


def _pump(client, server, rounds=20):
    """Drive handshakes (and reads) of two in-memory connections; the first error of each step."""
    errors = {}
    for _ in range(rounds):
        for name, conn in (("client", client), ("server", server)):
            for step, call in (("handshake", conn.do_handshake), ("recv", lambda: conn.recv(1024))):
                try:
                    call()
                except SSL.WantReadError:
                    pass
                except SSL.Error as e:
                    errors.setdefault((name, step), e)
        for src, dst in ((client, server), (server, client)):
            try:
                dst.bio_write(src.bio_read(65536))
            except SSL.WantReadError:
                pass
    return errors


class FakeChannel:
    """What Trust reads of an HTTP channel."""

    def __init__(self, local, x509=None):
        self.site = type("Site", (), {"local": local})()
        self.transport = type("Transport", (), {"getPeerCertificate": lambda _self: x509})()


class FakeHTTP:
    """What Trust reads of a request."""

    def __init__(self, local=False, pair=None):
        self.channel = FakeChannel(local, crypto.X509.from_cryptography(pair.cert) if pair else None)


class TrustTests(SynchronousTestCase):
    """Unix peers are trusted; TLS peers when their certificate is stored (and, in PKI mode, chains)."""

    def setUp(self):
        self.dir = temp_dir(self)
        self.store = MemoryStore()

    def add(self, pair):
        from twisted.internet import defer

        self.successResultOf(defer.Deferred.fromCoroutine(self.store.commit(
            [Put(KIND, pair.fingerprint, {"name": "x", "type": "client", "certificate": pair.cert_pem.decode()})])))

    def test_unix_trusted(self):
        """The unix socket is trusted without a certificate."""
        trust = Trust(self.store, self.dir)
        self.assertTrue(trust.is_trusted(FakeHTTP(local=True)))
        self.assertFalse(trust.pki)

    def test_tls_by_fingerprint(self):
        """A TLS peer is trusted only once its certificate is in the store."""
        trust = Trust(self.store, self.dir)
        pair = pki.client_cert()
        self.assertFalse(trust.is_trusted(FakeHTTP()))
        self.assertFalse(trust.is_trusted(FakeHTTP(pair=pair)))
        self.add(pair)
        self.assertTrue(trust.is_trusted(FakeHTTP(pair=pair)))
        self.assertFalse(trust.is_trusted(FakeHTTP(pair=pki.client_cert())))

    def test_peer_cached_per_connection(self):
        """The peer certificate is parsed once per connection."""
        trust = Trust(self.store, self.dir)
        http = FakeHTTP(pair=pki.client_cert())
        self.assertIs(trust.peer(http), trust.peer(http))
        self.assertIsNone(trust.peer(FakeHTTP()))

    def test_expired_not_trusted(self):
        """A stored certificate outside its validity period is not trusted."""
        trust = Trust(self.store, self.dir)
        pair = pki.client_cert()
        self.add(pair)
        http = FakeHTTP(pair=pair)
        peer = trust.peer(http)
        peer.not_after = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
        self.assertFalse(trust.is_trusted(http))

    def write_ca(self, ca, revoked=None):
        with open(os.path.join(self.dir, "server.ca"), "wb") as f:
            f.write(ca.cert_pem)
        if revoked is not None:
            with open(os.path.join(self.dir, "ca.crl"), "wb") as f:
                f.write(pki.revocation_list(ca, revoked))

    def test_pki_mode(self):
        """With server.ca, a stored certificate must also chain to the CA and not be revoked."""
        ca = pki.certificate_authority()
        signed, revoked, unsigned = pki.client_cert("s", ca), pki.client_cert("r", ca), pki.client_cert("u")
        self.write_ca(ca, revoked=[revoked])
        trust = Trust(self.store, self.dir)
        self.assertTrue(trust.pki)
        for pair in (signed, revoked, unsigned):
            self.add(pair)
        self.assertTrue(trust.is_trusted(FakeHTTP(pair=signed)))
        self.assertFalse(trust.is_trusted(FakeHTTP(pair=revoked)))
        self.assertFalse(trust.is_trusted(FakeHTTP(pair=unsigned)))
        self.assertFalse(trust.is_trusted(FakeHTTP(pair=pki.client_cert("other", pki.certificate_authority()))))

    def test_pki_without_crl(self):
        """Without a CRL every CA-signed certificate chains."""
        ca = pki.certificate_authority()
        self.write_ca(ca)
        trust = Trust(self.store, self.dir)
        http = FakeHTTP(pair=pki.client_cert("s", ca))
        self.assertTrue(trust.certificate_acceptable(trust.peer(http)))
        self.assertFalse(trust.certificate_acceptable(None))


def _pump_tickets(client, server, rounds=20):
    """Handshake `client` and `server` connections in memory, then let the client read the
    server's post-handshake messages (TLS 1.3 session tickets)."""
    for _ in range(rounds):
        _exchange(client, server)
    _read_pending(server, client)


class ResumptionTests(SynchronousTestCase):
    """A PinnedPeer with `resume` offers the last session: the next connection skips the
    certificate exchange (its pin check is not asked again); without, every one is full."""

    def _connect(self, peer, server_ctx):
        server = SSL.Connection(server_ctx, None)
        server.set_accept_state()
        client = peer.clientConnectionForTLS(None)
        client.set_connect_state()
        _pump_tickets(client, server)
        self.assertEqual(client.get_protocol_version_name(), "TLSv1.3")
        return server, client

    def _peer(self, resume):
        directory = temp_dir(self)
        cert_path, key_path = os.path.join(directory, "s.crt"), os.path.join(directory, "s.key")
        tls.generate_keypair(cert_path, key_path)
        ours_cert, ours_key = os.path.join(directory, "c.crt"), os.path.join(directory, "c.key")
        tls.generate_keypair(ours_cert, ours_key)
        with open(cert_path) as f:
            peer = tls.PinnedPeer("member", f.read(), ours_cert, ours_key, resume=resume)
        checks = []
        verify = peer._verify
        peer._verify = lambda *args: checks.append(args[3]) or verify(*args)
        return peer, tls.ServerContextFactory(cert_path, key_path).getContext(), checks

    def test_the_second_connection_resumes(self):
        peer, server_ctx, checks = self._peer(resume=True)
        server, _client = self._connect(peer, server_ctx)
        first = len(checks)
        self.assertGreater(first, 0)
        server, _client = self._connect(peer, server_ctx)
        self.assertEqual(len(checks), first)  # no certificate this time: resumed
        self.assertIsNotNone(server.get_peer_certificate())  # the server still knows who called

    def test_without_resume_each_is_full(self):
        peer, server_ctx, checks = self._peer(resume=False)
        self._connect(peer, server_ctx)
        first = len(checks)
        self._connect(peer, server_ctx)
        self.assertEqual(len(checks), 2 * first)
