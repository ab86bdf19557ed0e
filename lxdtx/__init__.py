"""lxdtx: a container daemon that speaks the LXD REST API."""

SERVER_VERSION = "3.1"
API_VERSION = "1.0"
