"""The server: `lxc info`, `/1.0` and its config, the HTTPS listener live, CORS, resources, operations."""

import hashlib

import pytest
import yaml

from lxdtx import tls
from lxdtx.response import etag_of
from tests.integration.net import free_port, https_request, port_open, wait_port

FOUNDATION_EXTENSIONS = [
    "auth_pki", "etag", "patch", "https_allowed_credentials", "profile_usedby", "certificate_update",
    "entity_description", "resources", "operation_description", "event_lifecycle",
]


def _server(daemon):
    answer = daemon.request("GET", "/1.0")
    assert answer.status == 200, answer
    return answer


def test_lxc_info(shared_daemon):
    """`lxc info` over the unix socket: a trusted 1.0 server at version 3.1 with our certificate."""
    info = yaml.safe_load(shared_daemon.lxc("info").stdout)
    assert info["auth"] == "trusted"
    assert info["api_version"] == "1.0"
    assert info["api_status"] == "stable"
    assert "tls" in info["auth_methods"]
    env = info["environment"]
    assert env["server_version"] == "3.1"
    assert env["server"] == "lxd"
    assert env["driver"] == "lxc"
    assert env["kernel"] == "Linux"
    assert env["server_clustered"] is False
    with open(f"{shared_daemon.dir}/server.crt") as f:
        pem = f.read()
    assert env["certificate"].strip() == pem.strip()
    assert env["certificate_fingerprint"] == hashlib.sha256(tls.pem_to_der(pem)).hexdigest()


def test_api_extensions(shared_daemon):
    """Every extension advertised here works, in the order of the API level; newer ones are absent."""
    extensions = _server(shared_daemon).metadata["api_extensions"]
    for name in FOUNDATION_EXTENSIONS:
        assert name in extensions
    from lxdtx.extensions import ALL

    assert extensions == [name for name in ALL if name in extensions]
    assert "instances" not in extensions and "certificate_token" not in extensions


def test_server_object(shared_daemon):
    """The trusted `/1.0` object: envelope, ETag of the config, environment facts."""
    answer = _server(shared_daemon)
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json["type"] == "sync" and answer.json["status_code"] == 200
    meta = answer.metadata
    assert meta["auth"] == "trusted" and meta["public"] is False
    assert answer.headers["ETag"] == etag_of(meta["config"])
    env = meta["environment"]
    for key in ("addresses", "architectures", "certificate", "certificate_fingerprint", "driver",
                "driver_version", "kernel", "kernel_architecture", "kernel_version", "server_pid",
                "server_version", "storage", "storage_version", "server_name"):
        assert key in env, key
    assert env["architectures"] and isinstance(env["server_pid"], int)


def test_root(shared_daemon):
    """`GET /` lists the API versions."""
    assert shared_daemon.request("GET", "/").metadata == ["/1.0"]


def test_trust_password(daemon):
    """`lxc config set core.trust_password` stores it hidden; other `lxc config set` calls keep it."""
    daemon.lxc("config", "set", "core.trust_password", "s3cret")
    assert _server(daemon).metadata["config"] == {"core.trust_password": True}
    assert "s3cret" not in daemon.lxc("config", "show").stdout
    # `lxc config set` sends the whole config back, with the password as `true`.
    daemon.lxc("config", "set", "core.https_allowed_origin", "https://example.com")
    config = _server(daemon).metadata["config"]
    assert config == {"core.trust_password": True, "core.https_allowed_origin": "https://example.com"}
    daemon.lxc("config", "unset", "core.trust_password")
    assert _server(daemon).metadata["config"] == {"core.https_allowed_origin": "https://example.com"}


def test_maas_api_key_hidden(daemon):
    """`maas.api.key` is a secret like the trust password: GET /1.0 shows it as `true`, never its
    value (nor `lxc config show`), and `lxc config set` of another key keeps it."""
    daemon.lxc("config", "set", "maas.api.key", "consumer:token:s3cret-key")
    assert _server(daemon).metadata["config"] == {"maas.api.key": True}
    assert "s3cret-key" not in daemon.request("GET", "/1.0").body.decode()
    assert "s3cret-key" not in daemon.lxc("config", "show").stdout
    daemon.lxc("config", "set", "maas.machine", "host1")
    assert _server(daemon).metadata["config"] == {"maas.api.key": True, "maas.machine": "host1"}
    with open(daemon.log_path) as f:
        assert "s3cret-key" not in f.read()
    daemon.lxc("config", "unset", "maas.api.key")
    assert _server(daemon).metadata["config"] == {"maas.machine": "host1"}


def test_https_address_live(daemon):
    """`core.https_address` starts, moves and stops the HTTPS listener without a restart."""
    first, second = free_port(), free_port()
    daemon.lxc("config", "set", "core.https_address", f"127.0.0.1:{first}")
    assert port_open(first)
    answer = https_request(first, "GET", "/1.0")
    assert answer.status == 200 and answer.tls_version == "TLSv1.3"
    assert _server(daemon).metadata["environment"]["addresses"] == [f"127.0.0.1:{first}"]

    daemon.lxc("config", "set", "core.https_address", f"127.0.0.1:{second}")
    assert wait_port(first, False) and port_open(second)
    assert https_request(second, "GET", "/").metadata == ["/1.0"]
    assert _server(daemon).metadata["environment"]["addresses"] == [f"127.0.0.1:{second}"]

    daemon.lxc("config", "unset", "core.https_address")
    assert wait_port(second, False)
    assert _server(daemon).metadata["environment"]["addresses"] == []


def test_https_address_same_port_other_host(daemon):
    """Moving between hosts on one port works (the old socket lets go first when it must)."""
    port = free_port()
    daemon.lxc("config", "set", "core.https_address", f"127.0.0.1:{port}")
    daemon.lxc("config", "set", "core.https_address", f"0.0.0.0:{port}")
    assert port_open(port)
    assert _server(daemon).metadata["config"]["core.https_address"] == f"0.0.0.0:{port}"
    daemon.lxc("config", "set", "core.https_address", f"127.0.0.1:{port}")
    assert https_request(port, "GET", "/").status == 200


def test_https_address_in_use(daemon):
    """An address that cannot be bound is a clear 400, and the old listener and config stay."""
    import socket

    port, busy = free_port(), socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        daemon.lxc("config", "set", "core.https_address", f"127.0.0.1:{port}")
        taken = busy.getsockname()[1]
        answer = daemon.request("PATCH", "/1.0", {"config": {"core.https_address": f"127.0.0.1:{taken}"}})
        assert answer.status == 400, answer
        assert f"127.0.0.1:{taken}" in answer.json["error"]
        assert _server(daemon).metadata["config"]["core.https_address"] == f"127.0.0.1:{port}"
        assert https_request(port, "GET", "/").status == 200
    finally:
        busy.close()


def test_https_flag(tmp_path):
    """`twistd lxdtx --https ADDR` listens and stores the address."""
    from tests.daemonproc import Daemon

    port = free_port()
    d = Daemon(https=f"127.0.0.1:{port}")
    try:
        d.start()
        assert port_open(port)
        assert d.request("GET", "/1.0").metadata["config"]["core.https_address"] == f"127.0.0.1:{port}"
    finally:
        d.cleanup()


def test_cors(daemon):
    """CORS answers follow the core.https_allowed_* keys; OPTIONS is answered."""
    daemon.request("PATCH", "/1.0", {"config": {
        "core.https_allowed_origin": "https://ui.example",
        "core.https_allowed_methods": "GET, POST, PUT, DELETE, OPTIONS",
        "core.https_allowed_headers": "Content-Type",
        "core.https_allowed_credentials": "true",
    }})
    answer = daemon.request("OPTIONS", "/1.0/profiles", headers={"Origin": "https://ui.example"})
    assert answer.status == 200
    assert answer.headers["Access-Control-Allow-Origin"] == "https://ui.example"
    assert answer.headers["Access-Control-Allow-Methods"] == "GET, POST, PUT, DELETE, OPTIONS"
    assert answer.headers["Access-Control-Allow-Headers"] == "Content-Type"
    assert answer.headers["Access-Control-Allow-Credentials"] == "true"
    plain = daemon.request("GET", "/1.0/profiles")
    assert "Access-Control-Allow-Origin" not in plain.headers
    assert plain.headers["Access-Control-Allow-Credentials"] == "true"
    daemon.request("PATCH", "/1.0", {"config": {"core.https_allowed_credentials": "false"}})
    assert "Access-Control-Allow-Credentials" not in daemon.request(
        "GET", "/1.0", headers={"Origin": "https://ui.example"}).headers


def test_resources(shared_daemon):
    """`/1.0/resources`: the host's CPUs and memory."""
    meta = shared_daemon.request("GET", "/1.0/resources").metadata
    assert meta["cpu"]["total"] >= 1 and meta["cpu"]["sockets"]
    assert 0 < meta["memory"]["used"] <= meta["memory"]["total"]


def test_operations_list(shared_daemon):
    """`lxc operation list` works; the API answers an object keyed by status."""
    out = shared_daemon.lxc("operation", "list").stdout
    assert "DESCRIPTION" in out and "STATUS" in out
    assert shared_daemon.request("GET", "/1.0/operations").metadata == {}
    assert shared_daemon.request("GET", "/1.0/operations?recursion=1").metadata == {}
    unknown = shared_daemon.request("GET", "/1.0/operations/00000000-0000-4000-8000-000000000000")
    assert unknown.status == 404
    assert shared_daemon.request("DELETE", "/1.0/operations/nope").status == 404
    assert shared_daemon.request("GET", "/1.0/operations/nope/wait?timeout=1").status == 404


@pytest.mark.parametrize("key,value", [
    ("images.auto_update_interval", "12"),
    ("images.compression_algorithm", "xz"),
    ("backups.compression_algorithm", "xz"),
    ("storage.lvm_volume_size", "20GB"),
])
def test_daemon_keys(shared_daemon, key, value):
    """The images.* and storage.* keys are stored through `lxc config set` and shown back."""
    shared_daemon.lxc("config", "set", key, value)
    assert shared_daemon.lxc("config", "get", key).stdout.strip() == value
    shared_daemon.lxc("config", "unset", key)
    assert key not in _server(shared_daemon).metadata["config"]
