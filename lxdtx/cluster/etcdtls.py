# -*- test-case-name: tests.integration.test_etcd_supervised -*-
"""TLS for talking to a member's etcd: trust the cluster certificate, show our own."""

from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer


@implementer(IOpenSSLClientConnectionCreator)
class ClusterPeer:
    """Client connections that accept only certificates signed by the cluster certificate
    (which signs nothing but member certificates, so no name check is needed) and present
    this member's certificate."""

    def __init__(self, ca_path, cert_path, key_path):
        self.ca_path, self.cert_path, self.key_path = ca_path, cert_path, key_path
        self._context = None

    def _get_context(self):
        if self._context is None:
            from OpenSSL import SSL

            ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
            ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
            ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION)
            ctx.load_verify_locations(self.ca_path.encode())
            ctx.set_verify(SSL.VERIFY_PEER, lambda conn, cert, errno, depth, ok: bool(ok))
            ctx.use_certificate_chain_file(self.cert_path.encode())
            ctx.use_privatekey_file(self.key_path.encode())
            self._context = ctx
        return self._context

    def clientConnectionForTLS(self, tls_protocol):
        from OpenSSL import SSL

        conn = SSL.Connection(self._get_context(), None)
        conn.set_app_data(tls_protocol)
        return conn


@implementer(IPolicyForHTTPS)
class ClusterPolicy:
    """The HTTPS policy of an etcd gateway client: every netloc gets the same creator."""

    def __init__(self, ca_path, cert_path, key_path):
        self._creator = ClusterPeer(ca_path, cert_path, key_path)

    def creatorForNetloc(self, hostname, port):
        return self._creator
