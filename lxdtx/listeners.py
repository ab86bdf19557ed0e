# -*- test-case-name: tests.integration.test_server -*-
"""The unix socket and the HTTPS listener (started, moved and stopped live)."""

import os

from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from lxdtx import tls
from lxdtx.config.types import parse_host_port
from lxdtx.errors import BadRequest
from lxdtx.router import ApiSite

BACKLOG = 1024


class Listeners:
    """Owns the listening ports of one daemon."""

    log = Logger()

    def __init__(self, daemon, router, reactor):
        self._daemon = daemon
        self._router = router
        self._reactor = reactor
        self._unix = None
        self._https = None
        spool = daemon.path("tmp")
        self._unix_site = ApiSite(router, spool_dir=spool)
        self._unix_site.local = True
        self._https_site = ApiSite(router, spool_dir=spool, untrusted=daemon.untrusted_connections)
        self._https_site.local = False
        self._context = None

    def listen_unix(self):
        path = self._daemon.path("unix.socket")
        # Every `lxc` command opens several connections at once (events, the request,
        # one per exec fd): a deep backlog keeps bursts of parallel commands from failing.
        # The state directory's lock is ours (lxdtx.singleton): a socket file left there is
        # a dead daemon's, as is the pid link older daemons kept beside it.
        for stale in (path, path + ".lock"):
            try:
                os.unlink(stale)
            except FileNotFoundError:
                pass
        self._unix = self._reactor.listenUNIX(path, self._unix_site, mode=0o660, backlog=BACKLOG)
        os.chmod(path, 0o660)

    def _context_factory(self):
        if self._context is None:
            ca = self._daemon.path("server.ca")
            self._context = tls.ServerContextFactory(
                self._daemon.cert_path, self._daemon.key_path, ca if os.path.exists(ca) else None)
        return self._context

    def _listen(self, address):
        host, number = parse_host_port(address, 8443)
        # TLS over a plain TCP port: pyOpenSSL is imported only once HTTPS is wanted.
        from twisted.protocols.tls import TLSMemoryBIOFactory

        factory = TLSMemoryBIOFactory(self._context_factory(), False, self._https_site)
        return self._reactor.listenTCP(number, factory, interface=host, backlog=BACKLOG)

    async def set_https(self, old, new):
        """The `core.https_address` hook: bind the new address first, then let the old one go.

        When the new address overlaps the old one (same port, another host) the old
        socket must go first; if the new bind then fails the old one is restored.
        A refused bind is a 400 naming the address; the old listener keeps serving.
        """
        port = None
        if new:
            try:
                port = self._listen(new)
            except CannotListenError as e:
                if self._https is None or parse_host_port(old, 8443)[1] != parse_host_port(new, 8443)[1]:
                    raise BadRequest(f"cannot listen on {new}: {e.socketError}")
                await self._https.stopListening()
                self._https = None
                try:
                    port = self._listen(new)
                except CannotListenError as e:
                    self._https = self._listen(old)
                    raise BadRequest(f"cannot listen on {new}: {e.socketError}")
            self.log.info("HTTPS listener on {address}", address=new)
        if self._https is not None:
            await self._https.stopListening()
        self._https = port
        self._daemon.https_address = parse_host_port(new, 8443) if new else None

    async def stop(self):
        for port in (self._https, self._unix):
            if port is not None:
                await port.stopListening()
        self._https = self._unix = None
