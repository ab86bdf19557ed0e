"""twistd plugin: `twistd -n lxdtx --dir DIR` (the code lives in lxdtx.tap)."""

from twisted.application.service import ServiceMaker

lxdtx = ServiceMaker("lxdtx", "lxdtx.tap", "LXD REST API container daemon", "lxdtx")
