"""A daemon whose state lives in etcd: given by address (`--etcd`), or its own supervised
member. Real daemons and etcd processes on loopback, stopped by pid, state removed."""

import base64
import json
import os
import signal
import ssl
import urllib.request

import pytest

from lxdtx.cluster import pki
from lxdtx.cluster.etcdprocess import EtcdFiles, EtcdMemberSpec, save_spec
from tests.daemonproc import Daemon, wait_until
from tests.etcdproc import ETCD, EtcdMember, free_port

pytestmark = pytest.mark.skipif(not os.path.exists(ETCD), reason="etcd is not installed (Debian package etcd-server)")


@pytest.fixture
def etcd():
    member = EtcdMember("e1").start()
    try:
        yield member
    finally:
        member.cleanup()


def _daemon(*extra):
    if os.geteuid() != 0:
        pytest.skip("integration tests run as root (containers, bridges, mounts)")
    d = Daemon()
    d.command = [*d.command, *extra]
    return d


def _etcd_keys(url, prefix, files=None):
    context = None
    if files is not None:
        context = ssl.create_default_context(cafile=files.ca_cert)
        context.check_hostname = False
        context.load_cert_chain(files.cert, files.key)
    body = json.dumps({"key": base64.b64encode(prefix).decode(),
                       "range_end": base64.b64encode(prefix[:-1] + bytes([prefix[-1] + 1])).decode()}).encode()
    with urllib.request.urlopen(urllib.request.Request(url + "/v3/kv/range", data=body), timeout=10,
                                context=context) as r:
        answer = json.loads(r.read())
    return sorted(base64.b64decode(kv["key"]).decode() for kv in answer.get("kvs", []))


def test_state_in_etcd_given_by_address(etcd):
    """With --etcd the daemon keeps its objects in etcd (no SQLite file), and they are
    there after a restart."""
    d = _daemon(f"--etcd={etcd.client_url}")
    try:
        d.start(timeout=120)
        d.lxc("profile", "create", "p1")
        d.lxc("profile", "set", "p1", "user.note", "kept")
        keys = _etcd_keys(etcd.client_url, b"lxdtx/doc/profile/")
        assert "lxdtx/doc/profile/p1" in keys and "lxdtx/doc/profile/default" in keys
        assert not os.path.exists(os.path.join(d.dir, "lxdtx.db"))
        d.restart()
        assert d.lxc("profile", "get", "p1", "user.note").stdout.strip() == "kept"
    finally:
        d.cleanup()


def test_unreachable_etcd_stops_start_naming_it():
    """An etcd that is not there: the daemon does not start, and its log says which."""
    url = f"http://127.0.0.1:{free_port()}"
    d = _daemon(f"--etcd={url}")
    try:
        with pytest.raises(RuntimeError) as caught:
            d.start(timeout=60)
        assert f"etcd member {url}: connection refused" in str(caught.value)
    finally:
        d.cleanup()


def test_bad_etcd_option():
    """--etcd with something that is not a URL is refused before anything starts."""
    d = _daemon("--etcd=127.0.0.1:2379")
    try:
        with pytest.raises(RuntimeError) as caught:
            d.start(timeout=60)
        assert "is not an http:// or https:// URL" in str(caught.value)
    finally:
        d.cleanup()


def _etcd_pid(files):
    with open(files.pid) as f:
        return int(f.read())


def test_supervised_member():
    """A daemon that is a cluster member runs its own etcd (TLS, data in its directory) as a
    child, restarts it when it dies, and ends it when it stops."""
    d = _daemon()
    try:
        files = EtcdFiles(d.dir)
        os.makedirs(files.dir, mode=0o700)
        pki.generate_cluster_ca(files.ca_cert, files.ca_key)
        pki.issue_member_cert(files.ca_cert, files.ca_key, files.cert, files.key, "node1", ["127.0.0.1"])
        spec = EtcdMemberSpec("node1", "127.0.0.1", free_port(), free_port())
        save_spec(files, spec)
        d.start(timeout=120)
        assert _etcd_keys(spec.client_url, b"lxdtx/alive/", files) == [f"lxdtx/alive/member/{spec.member_id}"]
        assert os.path.isdir(os.path.join(files.data, "member"))
        pid = _etcd_pid(files)
        with open(f"/proc/{pid}/status") as f:
            ppid = next(int(line.split()[1]) for line in f if line.startswith("PPid:"))
        assert ppid == d.proc.pid
        d.lxc("profile", "create", "p1")
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: os.path.exists(files.pid) and _etcd_pid(files) != pid, timeout=30)
        assert wait_until(lambda: d.lxc("profile", "create", "p2", check=False).returncode == 0, timeout=30)
        assert "restarting it" in d.log()
        d.restart()
        assert "p1" in d.lxc("profile", "list", "--format=csv").stdout
        last = _etcd_pid(files)
        d.stop()
        assert not os.path.exists(f"/proc/{last}")
        assert not os.path.exists(files.pid)
    finally:
        d.cleanup()
