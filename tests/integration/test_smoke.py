"""The daemon starts and the real client talks to it."""


def test_lxc_info(daemon):
    """`lxc info` over the unix socket shows a trusted server."""
    out = daemon.lxc("info").stdout
    assert "auth: trusted" in out
    assert "server_version: \"3.1\"" in out or "server_version: 3.1" in out
