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
        ["logformat", None, None, "Log as `text` (twistd's lines) or `json` (one object a line)"],
        ["loglevel", None, None, "Lowest level logged: debug, info (the default), warn or error"],
        ["logfile", None, None, "Append the log to this file instead of stdout"],
        ["etcd", None, None, "Keep the state in the etcd cluster at these client URLs (comma-separated) "
                             "instead of the embedded SQLite database"],
    ]

    def postOptions(self):
        from lxdtx import logsetup

        try:
            logsetup.check(self["logformat"] or "text", self["loglevel"] or "info")
        except logsetup.LogOptionError as e:
            raise usage.UsageError(str(e)) from None
        urls = [u.strip() for u in (self["etcd"] or "").split(",") if u.strip()]
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise usage.UsageError(f"--etcd: {url!r} is not an http:// or https:// URL")
        self["etcd"] = urls


def makeService(config):
    from twisted.internet import reactor

    from lxdtx.service import LxdtxService

    log_observer = None
    if config["logformat"] or config["loglevel"] or config["logfile"]:
        from lxdtx import logsetup

        log_observer = logsetup.observer(config["logformat"] or "text", config["loglevel"] or "info",
                                         config["logfile"])
    return LxdtxService(config["dir"], reactor, https=config["https"], auto_init=bool(config["auto-init"]),
                        log_observer=log_observer, etcd=config["etcd"])
