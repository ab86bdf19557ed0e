# -*- test-case-name: tests.unit.test_tls -*-
"""The daemon's certificate, fingerprints, the TLS server context and the client side.

The server asks for a client certificate but accepts any at handshake time:
unknown clients must reach `GET /1.0` and `POST /1.0/certificates`. Trust is
decided per request from the certificate's fingerprint (see lxdtx.trust).

As a client (migration, remote operations) the daemon talks to a peer whose
certificate it was given: that certificate is pinned, the only one accepted,
whatever names it carries or who signed it (as LXD's client does). Without a
pin, the system's CAs and service_identity's name check decide.
"""

import base64
import datetime
import hashlib
import ipaddress
import os
import re
import socket
import sys
import weakref

from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLContextFactory,
    IOpenSSLServerConnectionCreator,
)
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

_PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.S)


def pem_to_der(pem):
    """DER bytes of the first certificate in a PEM text."""
    m = _PEM_BLOCK.search(pem if isinstance(pem, str) else pem.decode("ascii"))
    if not m:
        raise ValueError("no PEM certificate found")
    return base64.b64decode("".join(m.group(1).split()))


def der_to_pem(der):
    body = base64.b64encode(der).decode("ascii")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def fingerprint(der):
    """Lower-case hex SHA-256 of a certificate's DER bytes."""
    return hashlib.sha256(der).hexdigest()


def generate_keypair(cert_path, key_path, common_name=None, client=False):
    """A self-signed EC P-384 certificate for ~10 years, with DNS and loopback IP SANs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    hostname = socket.gethostname() or "unspecified"
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lxdtx"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name or f"root@{hostname}"),
    ])
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_encipherment=True, content_commitment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if not client:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName(hostname),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]), critical=False)
    cert = builder.sign(key, hashes.SHA384())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


async def ensure_keypair(cert_path, key_path):
    """Generate the server keypair on first start.

    In a child process: the daemon itself loads the crypto libraries only once
    it serves HTTPS (see lxdtx.launch).
    """
    if not (os.path.exists(cert_path) and os.path.exists(key_path)):
        from lxdtx.asyncutil import run

        await run([sys.executable, "-m", "lxdtx.tls", cert_path, key_path])


@implementer(IOpenSSLContextFactory, IOpenSSLServerConnectionCreator)
class ServerContextFactory:
    """pyOpenSSL contexts for the HTTPS listener: TLS 1.2+ (1.3 offered), client cert requested,
    no renegotiation."""

    def __init__(self, cert_path, key_path, ca_path=None):
        self.cert_path = cert_path
        self.key_path = key_path
        self.ca_path = ca_path
        self._context = None

    def getContext(self):
        if self._context is None:
            from OpenSSL import SSL

            ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
            ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
            # No renegotiation (TLS 1.2; 1.3 has none): a client could otherwise make the
            # server redo handshakes at will, each costing it far more than the client.
            ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_RENEGOTIATION)
            ctx.set_cipher_list(b"ECDHE+AESGCM:ECDHE+CHACHA20")
            ctx.use_certificate_chain_file(self.cert_path.encode())
            ctx.use_privatekey_file(self.key_path.encode())
            if self.ca_path:
                ctx.load_client_ca(self.ca_path.encode())
            # Request a certificate, accept any: trust is decided per request.
            ctx.set_verify(SSL.VERIFY_PEER, lambda conn, cert, errno, depth, ok: True)
            ctx.set_session_id(b"lxdtx")
            self._context = ctx
        return self._context

    def serverConnectionForTLS(self, tls_protocol):
        from OpenSSL import SSL

        return SSL.Connection(self.getContext(), None)


@implementer(IOpenSSLClientConnectionCreator)
class PinnedPeer:
    """Client connections that accept only the peer certificate `peer_pem`, presenting
    our own (`cert_path`, `key_path`) when given.

    With `resume`, a connection offers the TLS session (ticket) the last handshake gave, so
    the next connection to the same peer resumes instead of a full handshake (no key
    exchange by certificate, no signature). Only a session whose handshake checked the pin
    is kept, and only on this object: keep one per peer."""

    def __init__(self, hostname, peer_pem, cert_path=None, key_path=None, resume=False):
        self.hostname = hostname
        self.pin = fingerprint(pem_to_der(peer_pem))
        self.cert_path = cert_path
        self.key_path = key_path
        self.resume = resume
        self._context = None
        self._session = None
        self._finished = weakref.WeakSet()  # connections whose handshake is done (resume)

    def _verify(self, conn, cert, errno, depth, ok):
        if depth > 0:
            return True  # the chain does not matter: the leaf is the one we know or nothing
        from cryptography.hazmat.primitives.serialization import Encoding

        return hashlib.sha256(cert.to_cryptography().public_bytes(Encoding.DER)).hexdigest() == self.pin

    def _get_context(self):
        if self._context is None:
            from OpenSSL import SSL

            ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
            ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
            ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION)
            ctx.set_verify(SSL.VERIFY_PEER, self._verify)
            if self.cert_path:
                ctx.use_certificate_chain_file(self.cert_path.encode())
                ctx.use_privatekey_file(self.key_path.encode())
            if self.resume:
                ctx.set_session_cache_mode(SSL.SESS_CACHE_CLIENT)
                ctx.set_info_callback(self._keep_session)
            self._context = ctx
        return self._context

    def _keep_session(self, conn, where, _ret):
        # A TLS 1.3 session becomes resumable only with the ticket the server sends after the
        # handshake; reading it ends in an SSL_CB_EXIT, so after the handshake each exit
        # takes the session again.
        from OpenSSL import SSL

        if where & SSL.SSL_CB_HANDSHAKE_DONE:
            self._finished.add(conn)
        if where & (SSL.SSL_CB_HANDSHAKE_DONE | SSL.SSL_CB_EXIT) and conn in self._finished:
            self._session = conn.get_session()

    def clientConnectionForTLS(self, tls_protocol):
        from OpenSSL import SSL

        conn = SSL.Connection(self._get_context(), None)
        conn.set_app_data(tls_protocol)
        if self.hostname and not _is_address(self.hostname):
            conn.set_tlsext_host_name(self.hostname.encode("idna"))
        if self._session is not None:
            conn.set_session(self._session)
        return conn


def _is_address(host):
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def client_creator(hostname, peer_pem=None, cert_path=None, key_path=None):
    """What a TLS client connection to `hostname` verifies the peer with: the pinned
    `peer_pem`, else the system's CAs and the name (service_identity)."""
    if peer_pem:
        return PinnedPeer(hostname, peer_pem, cert_path, key_path)
    from twisted.internet import ssl

    client_cert = None
    if cert_path:
        with open(cert_path) as c, open(key_path) as k:
            client_cert = ssl.PrivateCertificate.loadPEM(c.read() + k.read())
    return ssl.optionsForClientTLS(hostname, clientCertificate=client_cert)


@implementer(IPolicyForHTTPS)
class RemotePolicy:
    """How an HTTPS agent (treq) checks the servers it talks to: as `client_creator` does,
    with `peer_pem` pinned when given."""

    def __init__(self, peer_pem=None):
        self.peer_pem = peer_pem or None

    def creatorForNetloc(self, hostname, port):
        host = hostname.decode("ascii") if isinstance(hostname, bytes) else hostname
        return client_creator(host.strip("[]"), self.peer_pem)


if __name__ == "__main__":
    generate_keypair(sys.argv[1], sys.argv[2])
