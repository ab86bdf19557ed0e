"""Remote image sources with the real `lxc` client, all on loopback: a second daemon as an
LXD-protocol remote, and a simplestreams tree served over TLS by Twisted's static web server.

`lxc image copy` (aliases, `--copy-aliases`, `--auto-update`) and `lxc launch remote:alias`
from both; `lxc image refresh` after a newer image is published (the alias moves, the old
image goes); certificates checked (pinned, or the test CA through SSL_CERT_FILE and the
server's name); files checked against their hashes; bad sources refused; a crash while
fetching leaves nothing, and one at any step of a refresh leaves one image with the alias.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest
import yaml

import lxdtx.image.store  # noqa: F401 (declares the refresh points)
from lxdtx import faults
from lxdtx.image import busybox
from tests import imagefiles, pki
from tests.daemonproc import Daemon, wait_until
from tests.integration.net import free_port
from tests.integration.streamtree import StreamTree

pytestmark = pytest.mark.timeout(600)
PASSWORD = "remote-images-pw"


@pytest.fixture(scope="module")
def pki_dir():
    path = tempfile.mkdtemp(prefix="lxdtx-remote-images-", dir="/var/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def ca(pki_dir):
    authority = pki.certificate_authority("lxdtx test image CA")
    with open(os.path.join(pki_dir, "ca.crt"), "wb") as f:
        f.write(authority.cert_pem)
    authority.path = os.path.join(pki_dir, "ca.crt")
    return authority


@pytest.fixture(scope="module")
def streams(pki_dir, ca):
    """A simplestreams tree with one busybox version, served with a CA-signed certificate."""
    tree = StreamTree(os.path.join(pki_dir, "tree"))
    tree.first = tree.publish("20260101_00:00", 1767225600)
    cert, key = pki.server_cert("127.0.0.1", issuer=ca).write(pki_dir, "streams")
    tree.url = tree.serve(cert, key)
    try:
        yield tree
    finally:
        tree.stop()


def _env(ca):
    return {"SSL_CERT_FILE": ca.path}


@pytest.fixture(scope="module")
def pair(ca):
    """`local` (trusting the test CA) with `other` added as the LXD remote `other`."""
    if os.geteuid() != 0:
        pytest.skip("integration tests run as root (containers, bridges, mounts)")
    local, other = Daemon(auto_init=True), Daemon(auto_init=True)
    local.extra_env = _env(ca)
    try:
        for d in (local, other):
            d.start(timeout=120)
        other.port = free_port()
        other.lxc("config", "set", "core.trust_password", PASSWORD)
        other.lxc("config", "set", "core.https_address", f"127.0.0.1:{other.port}")
        local.lxc("remote", "add", "other", f"https://127.0.0.1:{other.port}", "--password", PASSWORD,
                  "--accept-certificate")
        yield local, other
    finally:
        for d in (local, other):
            d.cleanup()


def _images(d):
    return {i["fingerprint"]: i for i in d.request("GET", "/1.0/images?recursion=1").metadata}


def _alias_target(d, name):
    result = d.request("GET", f"/1.0/images/aliases/{name}")
    return result.metadata["target"] if result.status == 200 else None


def _spool(d):
    path = os.path.join(d.dir, "tmp")
    return sorted(n for n in os.listdir(path) if n.startswith("image-")) if os.path.isdir(path) else []


def _remote_image(other, workdir, alias, creation_date):
    """A busybox image of its own on `other` (a fingerprint no other test daemon has)."""
    image = busybox.build_image(workdir, compression="xz", creation_date=creation_date)
    other.lxc("image", "import", image.path, "--alias", alias)
    return image.fingerprint


def _delete_image(d, fingerprint):
    d.lxc("image", "delete", fingerprint, check=False)


def test_copy_and_launch_from_lxd_remote(pair, workdir):
    """`lxc image copy other:x local:` brings the private image (through a secret) with its aliases;
    `lxc launch other:alias` fetches it as a cached image and starts a container from it."""
    local, other = pair
    fp = _remote_image(other, workdir, "bb-remote", 1767225601)
    try:
        local.lxc("image", "copy", "other:bb-remote", "local:", "--alias", "from-other", "--copy-aliases",
                  timeout=180)
        image = _images(local)[fp]
        assert sorted(a["name"] for a in image["aliases"]) == ["bb-remote", "from-other"]
        assert image["cached"] is False and image["auto_update"] is False and image["public"] is False
        assert image["update_source"]["protocol"] == "lxd"
        assert image["update_source"]["server"] == f"https://127.0.0.1:{other.port}"
        assert "BEGIN CERTIFICATE" in image["update_source"]["certificate"]
        with open(os.path.join(local.dir, "images", fp), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == fp
        local.lxc("image", "delete", fp)

        local.lxc("launch", "other:bb-remote", "from-remote", timeout=180)
        try:
            assert local.request("GET", "/1.0/containers/from-remote").metadata["status"] == "Running"
            image = _images(local)[fp]
            assert image["cached"] is True and image["auto_update"] is True
            config = local.request("GET", "/1.0/containers/from-remote").metadata["config"]
            assert config["volatile.base_image"] == fp
        finally:
            local.lxc("delete", "-f", "from-remote", check=False)
        assert _spool(local) == []
    finally:
        _delete_image(local, fp)
        _delete_image(other, fp)


def test_simplestreams_copy_launch_refresh(pair, streams, ca):
    """From a simplestreams remote: copy with `--auto-update`, launch, then a newer version is
    published and `lxc image refresh` moves the alias to it and removes the old image."""
    local, _ = pair
    env = _env(ca)
    local.lxc("remote", "add", "ss", streams.url, "--protocol", "simplestreams", env=env)
    first = streams.first
    try:
        local.lxc("image", "copy", "ss:bb", "local:", "--alias", "ss-bb", "--auto-update", env=env, timeout=180)
        image = _images(local)[first]
        assert image["auto_update"] is True and image["cached"] is False
        assert image["update_source"] == {"alias": "bb", "certificate": "", "protocol": "simplestreams",
                                          "server": streams.url}
        assert image["properties"]["os"] == "Busybox" and image["properties"]["release"] == "edge"
        assert _alias_target(local, "ss-bb") == first

        local.lxc("launch", "ss:bb", "from-streams", env=env, timeout=180)
        try:
            assert local.request("GET", "/1.0/containers/from-streams").metadata["status"] == "Running"
            up_to_date = local.lxc("image", "refresh", "ss-bb", env=env, timeout=120).stdout
            assert "up to date" in up_to_date, up_to_date

            second = streams.publish("20260102_00:00", 1767312000)
            assert second != first
            out = local.lxc("image", "refresh", "ss-bb", env=env, timeout=180).stdout
            assert "refreshed" in out.lower(), out
            assert _alias_target(local, "ss-bb") == second
            found = _images(local)
            assert first not in found and second in found
            assert found[second]["auto_update"] is True
            assert not os.path.exists(os.path.join(local.dir, "images", first))
            # The container made from the old image keeps running.
            assert local.request("GET", "/1.0/containers/from-streams").metadata["status"] == "Running"
        finally:
            local.lxc("delete", "-f", "from-streams", check=False)
    finally:
        for fp in list(_images(local)):
            if _images(local)[fp].get("update_source", {}).get("protocol") == "simplestreams":
                _delete_image(local, fp)
        local.lxc("remote", "remove", "ss", check=False)


def _pull(d, server, name, certificate="", protocol="simplestreams"):
    body = {"source": {"type": "image", "mode": "pull", "server": server, "protocol": protocol,
                       "alias": name, "certificate": certificate}}
    return d.request("POST", "/1.0/images", body)


def test_certificates_are_checked(pair, streams, ca, pki_dir):
    """A server whose certificate the test CA did not sign, or that names another address, is
    refused; pinning its certificate in the source makes it usable."""
    local, _ = pair
    other_tree = StreamTree(os.path.join(pki_dir, "tree-selfsigned"))
    fingerprint = other_tree.publish("20260101_00:00", 1767225700)
    self_signed = pki.server_cert("127.0.0.1")
    wrong_name = pki.server_cert("127.0.0.2", issuer=ca)
    try:
        for stem, pair_ in (("selfsigned", self_signed), ("wrongname", wrong_name)):
            cert, key = pair_.write(pki_dir, stem)
            url = other_tree.serve(cert, key)
            try:
                op = local.wait_operation(_pull(local, url, "bb"))
                assert op["status"] == "Failure", op
                assert "certificate is not trusted" in op["err"], op["err"]
                if stem == "selfsigned":
                    op = local.wait_operation(_pull(local, url, "bb", certificate=self_signed.cert_pem.decode()))
                    assert op["status"] == "Success", op
                    assert op["metadata"]["fingerprint"] == fingerprint
            finally:
                other_tree.stop()
        assert _spool(local) == []
    finally:
        _delete_image(local, fingerprint)


def test_hash_mismatch_refused(pair, streams, ca, pki_dir):
    """A file that is not what the stream says, or parts that do not make the fingerprint,
    are refused and leave nothing behind."""
    local, _ = pair
    tree = StreamTree(os.path.join(pki_dir, "tree-tampered"))
    tree.publish("20260101_00:00", 1767225800)
    cert, key = pki.server_cert("127.0.0.1", issuer=ca).write(pki_dir, "tampered")
    url = tree.serve(cert, key)
    before = sorted(_images(local))
    try:
        version = tree.versions["20260101_00:00"]["items"]
        version["lxd.tar.xz"]["combined_rootxz_sha256"] = "0" * 64
        tree._write_index("bb")
        op = local.wait_operation(_pull(local, url, "bb"))
        assert op["status"] == "Failure" and "fingerprint doesn't match" in op["err"], op

        version["root.tar.xz"]["sha256"] = "1" * 64
        tree._write_index("bb")
        op = local.wait_operation(_pull(local, url, "bb"))
        assert op["status"] == "Failure" and "does not match its sha256" in op["err"], op
        assert sorted(_images(local)) == before
        assert _spool(local) == []
    finally:
        tree.stop()


@pytest.mark.parametrize("source, word", [
    ({"server": "http://127.0.0.1:1"}, "source.server"),
    ({"server": "https://127.0.0.1:1", "protocol": "ftp"}, "source.protocol"),
    ({"server": "https://127.0.0.1:1", "certificate": "not a pem"}, "source.certificate"),
    ({"server": "https://127.0.0.1:1", "alias": ""}, "source.fingerprint or source.alias"),
    ({"server": "https://127.0.0.1:1", "alias": 7}, "source.alias"),
    ({"server": "https://127.0.0.1:1", "mode": "push"}, "source.mode"),
])
def test_bad_remote_source_refused(pair, source, word):
    """A remote image source with a bad field is a 400 naming it, for images and containers."""
    local, _ = pair
    body = {"type": "image", "alias": "x", **source}
    before = sorted(_images(local))
    result = local.request("POST", "/1.0/images", {"source": body})
    assert result.status == 400 and word in result.json["error"], result
    result = local.request("POST", "/1.0/containers", {"name": "never", "source": body})
    assert result.status == 400 and word in result.json["error"], result
    assert sorted(_images(local)) == before
    assert local.request("GET", "/1.0/containers/never").status == 404


def test_unreachable_remote_fails_cleanly(pair):
    """A launch from a server nobody listens on fails its operation with a clear message."""
    local, _ = pair
    port = free_port()
    result = local.request("POST", "/1.0/containers", {"name": "unreachable", "source": {
        "type": "image", "mode": "pull", "server": f"https://127.0.0.1:{port}", "protocol": "lxd",
        "alias": "x"}})
    op = local.wait_operation(result)
    assert op["status"] == "Failure" and f"127.0.0.1:{port}" in op["err"], op
    assert local.request("GET", "/1.0/containers/unreachable").status == 404
    # The name is free again.
    assert "unreachable" not in json.dumps(local.request("GET", "/1.0/containers").metadata)


def test_crash_while_fetching_leaves_nothing(streams, ca):
    """A daemon killed after the files arrived but before they became an image has, once
    restarted, neither the image nor its files."""
    if os.geteuid() != 0:
        pytest.skip("integration tests run as root")
    d = Daemon()
    d.extra_env = _env(ca)
    try:
        d.start(timeout=60, crash_at="image.pull.fetched")
        d.request("POST", "/1.0/images", {"source": {"type": "image", "mode": "pull", "server": streams.url,
                                                     "protocol": "simplestreams", "alias": "bb"}})
        assert wait_until(lambda: d.proc.poll() is not None, timeout=120)
        assert _spool(d), "the fetched files were there when it died"
        d.start(timeout=60)
        assert _images(d) == {}
        assert _spool(d) == []
        images_dir = os.path.join(d.dir, "images")
        assert not os.path.isdir(images_dir) or os.listdir(images_dir) == []
    finally:
        d.cleanup()


REFRESH_POINTS = ("image.refresh.recorded", "image.refresh.pulled", "image.refresh.committed")


@pytest.mark.parametrize("point", REFRESH_POINTS)
def test_crash_while_refreshing(ca, pki_dir, point):
    """A daemon killed at a step of a refresh has, once restarted, exactly one of the two
    images, with the alias on it and no stray files: the old one before the switch was
    committed, the new one (with the old one's flags) after."""
    assert faults.points("image.refresh.") == list(REFRESH_POINTS)
    if os.geteuid() != 0:
        pytest.skip("integration tests run as root")
    tree = StreamTree(os.path.join(pki_dir, f"tree-{point}"))
    first = tree.publish("20260101_00:00", 1767227000 + REFRESH_POINTS.index(point))
    cert, key = pki.server_cert("127.0.0.1", issuer=ca).write(pki_dir, point)
    url = tree.serve(cert, key)
    d = Daemon()
    d.extra_env = _env(ca)
    try:
        d.start(timeout=60, crash_at=point)
        op = d.wait_operation(d.request("POST", "/1.0/images", {
            "source": {"type": "image", "mode": "pull", "server": url, "protocol": "simplestreams", "alias": "bb"},
            "auto_update": True, "public": True, "aliases": [{"name": "kept"}]}))
        assert op["status"] == "Success", op
        second = tree.publish("20260102_00:00", 1767313000 + REFRESH_POINTS.index(point))
        d.request("POST", f"/1.0/images/{first}/refresh", {})
        assert wait_until(lambda: d.proc.poll() is not None, timeout=120), "never reached " + point
        d.start(timeout=60)
        survivor = second if point == "image.refresh.committed" else first
        found = _images(d)
        assert sorted(found) == [survivor]
        assert found[survivor]["auto_update"] is True and found[survivor]["public"] is True
        assert _alias_target(d, "kept") == survivor
        assert sorted(os.listdir(os.path.join(d.dir, "images"))) == [survivor, survivor + ".rootfs"]
        assert _spool(d) == []
        assert d.request("GET", "/1.0/images/aliases").metadata == ["/1.0/images/aliases/kept"]
    finally:
        d.cleanup()
        tree.stop()


def test_refresh_to_an_image_already_here(ca, pki_dir):
    """A refresh whose newer image was pulled before moves the alias to it and removes the old
    image, and the newer image keeps its own flags (it is not the refresh's to change)."""
    if os.geteuid() != 0:
        pytest.skip("integration tests run as root")
    tree = StreamTree(os.path.join(pki_dir, "tree-here"))
    first = tree.publish("20260101_00:00", 1767228000)
    cert, key = pki.server_cert("127.0.0.1", issuer=ca).write(pki_dir, "here")
    url = tree.serve(cert, key)
    d = Daemon()
    d.extra_env = _env(ca)
    source = {"type": "image", "mode": "pull", "server": url, "protocol": "simplestreams", "alias": "bb"}
    try:
        d.start(timeout=60)
        op = d.wait_operation(d.request("POST", "/1.0/images", {"source": source, "auto_update": True,
                                                                "aliases": [{"name": "kept"}]}))
        assert op["status"] == "Success", op
        second = tree.publish("20260102_00:00", 1767314000)
        d.stop()  # a fresh start reads the index again (a plain pull uses the one it read)
        d.start(timeout=60)
        op = d.wait_operation(d.request("POST", "/1.0/images", {"source": source}))
        assert op["status"] == "Success" and op["metadata"]["fingerprint"] == second, op
        op = d.wait_operation(d.request("POST", f"/1.0/images/{first}/refresh", {}))
        assert op["status"] == "Success" and op["metadata"] == {"refreshed": True}, op
        found = _images(d)
        assert sorted(found) == [second] and found[second]["auto_update"] is False
        assert _alias_target(d, "kept") == second
        assert sorted(os.listdir(os.path.join(d.dir, "images"))) == [second, second + ".rootfs"]
    finally:
        d.cleanup()
        tree.stop()


def test_cached_image_expires(pair, streams, ca):
    """An image fetched for `lxc launch` is cached; once unused for `images.remote_cache_expiry`
    days (here 0) it is removed, while an imported image stays."""
    local, _ = pair
    env = _env(ca)
    local.lxc("remote", "add", "ss-cache", streams.url, "--protocol", "simplestreams", env=env)
    cached = []
    try:
        local.lxc("launch", "ss-cache:busybox/edge", "cache-me", env=env, timeout=180)
        cached = [fp for fp, image in _images(local).items() if image["cached"]]
        assert len(cached) == 1
        assert _images(local)[cached[0]]["last_used_at"] != "0001-01-01T00:00:00Z"
        local.lxc("delete", "-f", "cache-me")
        imported = [fp for fp, image in _images(local).items() if not image["cached"]]
        local.lxc("config", "set", "images.remote_cache_expiry", "0")
        assert wait_until(lambda: cached[0] not in _images(local), timeout=30)
        assert not os.path.exists(os.path.join(local.dir, "images", cached[0]))
        assert sorted(fp for fp in _images(local)) == sorted(imported)
    finally:
        local.lxc("config", "unset", "images.remote_cache_expiry", check=False)
        local.lxc("delete", "-f", "cache-me", check=False)
        for fp in cached:
            _delete_image(local, fp)
        local.lxc("remote", "remove", "ss-cache", check=False)


def test_download_progress_in_operation(pair, ca, pki_dir):
    """While the files arrive, the operation's metadata carries `download_progress` as LXD
    words it (`metadata: 100% (...)`, `rootfs: ...% (...MB/s)`), seen on the events stream."""
    local, _ = pair
    tree = StreamTree(os.path.join(pki_dir, "tree-progress"))
    fingerprint = tree.publish("20260101_00:00", 1767225900)
    cert, key = pki.server_cert("127.0.0.1", issuer=ca).write(pki_dir, "progress")
    url = tree.serve(cert, key)
    monitor = subprocess.Popen(["lxc", "monitor", "--type=operation"], env=local.env(), stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(1)  # the monitor subscribes
        op = local.wait_operation(_pull(local, url, "bb"))
        assert op["status"] == "Success", op
        time.sleep(1)
        monitor.terminate()
        seen, _ = monitor.communicate(timeout=10)
        progress = re.findall(r"download_progress: (.+)", seen)
        assert any(p.strip("'\"").startswith("metadata: 100% (") for p in progress), progress
        assert any(re.match(r"rootfs: \d+% \([\d.]+MB/s\)", p.strip("'\"")) for p in progress), progress
    finally:
        if monitor.poll() is None:
            monitor.kill()
            monitor.wait(10)
        tree.stop()
        _delete_image(local, fingerprint)


def test_refresh_follows_lxd_remote_alias(pair, workdir):
    """A public image copied by alias with `--auto-update` from an LXD remote follows that alias:
    once it names a newer image there, `lxc image refresh` fetches it and the old one goes."""
    local, other = pair
    first = _remote_image(other, workdir, "bb-pub", 1767226000)
    second = None
    try:
        other.lxc("image", "edit", first, input=yaml_public(other, first))
        local.lxc("image", "copy", "other:bb-pub", "local:", "--alias", "pub-local", "--auto-update", timeout=180)
        image = _images(local)[first]
        assert image["auto_update"] is True and image["update_source"]["alias"] == "bb-pub"
        second = _remote_image(other, workdir, "bb-next", 1767226100)
        other.lxc("image", "edit", second, input=yaml_public(other, second))
        other.lxc("image", "alias", "delete", "bb-pub")
        other.lxc("image", "alias", "create", "bb-pub", second)
        out = local.lxc("image", "refresh", "pub-local", timeout=180).stdout
        assert "refreshed" in out.lower(), out
        assert _alias_target(local, "pub-local") == second
        assert first not in _images(local)
    finally:
        for fp in (first, second):
            if fp:
                _delete_image(local, fp)
                _delete_image(other, fp)


def yaml_public(d, fingerprint):
    """The image's editable fields with `public: true`, as `lxc image edit` reads them."""
    current = d.request("GET", f"/1.0/images/{fingerprint}").metadata
    return yaml.safe_dump({"auto_update": current["auto_update"], "properties": current["properties"],
                           "public": True})


def test_copy_split_image_from_lxd_remote(pair, workdir):
    """A split image (metadata tarball + squashfs rootfs) comes over as the multipart export and
    is stored split, with the same fingerprint."""
    local, other = pair
    meta, rootfs = imagefiles.split("xz", rootfs="squashfs")
    fp = hashlib.sha256(meta + rootfs).hexdigest()
    paths = []
    for name, data in (("meta.tar.xz", meta), ("rootfs.squashfs", rootfs)):
        paths.append(os.path.join(workdir, name))
        with open(paths[-1], "wb") as f:
            f.write(data)
    other.lxc("image", "import", *paths, "--alias", "split-remote")
    try:
        local.lxc("image", "copy", "other:split-remote", "local:", "--alias", "split-local", timeout=180)
        assert _alias_target(local, "split-local") == fp
        assert os.path.exists(os.path.join(local.dir, "images", fp + ".rootfs"))
        assert _images(local)[fp]["size"] == len(meta) + len(rootfs)
    finally:
        _delete_image(local, fp)
        _delete_image(other, fp)


def test_redirects_stay_on_https(pair, ca, pki_dir):
    """A server that redirects is followed to https URLs only."""
    local, _ = pair
    tree = StreamTree(os.path.join(pki_dir, "tree-redirects"))
    fingerprint = tree.publish("20260101_00:00", 1767226200)
    cert, key = pki.server_cert("127.0.0.1", issuer=ca).write(pki_dir, "redirects")
    url = tree.serve(cert, key)
    try:
        op = local.wait_operation(_pull(local, url + "/insecure", "bb"))
        assert op["status"] == "Failure" and "which is not https" in op["err"], op
        op = local.wait_operation(_pull(local, url + "/moved", "bb"))
        assert op["status"] == "Success", op
        assert op["metadata"]["fingerprint"] == fingerprint
    finally:
        tree.stop()
        _delete_image(local, fingerprint)
