"""`twistd lxdtx`: options and the service maker (the only place the global reactor is imported)."""

from twisted.python import usage


class Options(usage.Options):
    """Command-line options of `twistd lxdtx`."""

    optFlags = [
        ["auto-init", None, "On start, create what `lxdtx init --auto` creates if it is missing"],
    ]

    optParameters = [
        ["dir", "d", "/var/lib/lxdtx", "Directory holding all of the daemon's state"],
        ["https", None, None, "Listen for HTTPS on ADDR:PORT (stored as core.https_address)"],
    ]


def makeService(config):
    from twisted.internet import reactor

    from lxdtx.service import LxdtxService

    return LxdtxService(config["dir"], reactor, https=config["https"], auto_init=bool(config["auto-init"]))
