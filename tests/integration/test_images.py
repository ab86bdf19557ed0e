"""Images through the real `lxc` client, pylxd and raw HTTP: import, list, info, aliases,
edit, export (byte-identical), delete, secrets for untrusted callers, and bad uploads."""

import datetime
import hashlib
import json
import os
import shutil
import socket

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests import imagefiles
from tests.daemonproc import Daemon, UnixHTTPConnection


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def write(directory, name, data):
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def read(path):
    with open(path, "rb") as f:
        return f.read()


def image_files(daemon):
    path = os.path.join(daemon.dir, "images")
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def spool_leftovers(daemon):
    path = os.path.join(daemon.dir, "tmp")
    return [name for name in os.listdir(path) if name.startswith("image-")] if os.path.isdir(path) else []


def upload(daemon, data, headers=None):
    return daemon.request("POST", "/1.0/images", raw=data,
                          headers={"Content-Type": "application/octet-stream", **(headers or {})})


def import_raw(daemon, data, headers=None):
    """Upload through the API, wait, return the final operation."""
    op = daemon.wait_operation(upload(daemon, data, headers))
    assert op["status"] == "Success", op
    return op


def images(daemon):
    return daemon.request("GET", "/1.0/images?recursion=1").metadata


@pytest.mark.parametrize("compression", imagefiles.COMPRESSIONS)
def test_lxc_import_unified_list_info_export_delete(shared_daemon, workdir, compression):
    """`lxc image import` of a unified tarball in each compression: listed, described,
    exported byte for byte, deleted with its files."""
    d = shared_daemon
    data = imagefiles.unified(compression)
    fp = sha256(data)
    path = write(workdir, "img" + imagefiles.EXTENSIONS[compression], data)
    alias = f"u-{compression}"
    out = d.lxc("image", "import", path, "--alias", alias).stdout
    assert f"Image imported with fingerprint: {fp}" in out

    listing = d.lxc("image", "list", "--format", "json").stdout
    entry = next(i for i in json.loads(listing) if i["fingerprint"] == fp)
    assert [a["name"] for a in entry["aliases"]] == [alias]
    assert entry["public"] is False
    assert entry["filename"] == os.path.basename(path)
    assert entry["size"] == len(data)
    assert entry["architecture"] == "x86_64"
    assert entry["properties"] == {"os": "testos", "release": "1.0", "description": "test image"}
    assert alias in d.lxc("image", "list").stdout

    info = d.lxc("image", "info", alias).stdout
    assert f"Fingerprint: {fp}" in info
    assert "os: testos" in info

    out_dir = os.path.join(workdir, "export")
    os.mkdir(out_dir)
    d.lxc("image", "export", alias, out_dir)
    exported = os.listdir(out_dir)
    assert exported == [fp + imagefiles.EXTENSIONS[compression]]
    assert sha256(read(os.path.join(out_dir, exported[0]))) == fp

    d.lxc("image", "delete", alias)
    assert fp not in d.lxc("image", "list").stdout
    assert d.request("GET", f"/1.0/images/{fp}").status == 404
    assert d.request("GET", f"/1.0/images/aliases/{alias}").status == 404
    assert fp not in image_files(d)


@pytest.mark.parametrize("rootfs,compression", [("tar", "gzip"), ("tar", "none"), ("squashfs", "xz")])
def test_lxc_import_split_and_export(shared_daemon, workdir, rootfs, compression):
    """`lxc image import meta rootfs`: the fingerprint covers both files, the filename is the
    rootfs part's, and `lxc image export` writes both files back unchanged."""
    if rootfs == "squashfs" and shutil.which("mksquashfs") is None:
        pytest.skip("mksquashfs (squashfs-tools) is not installed")
    d = shared_daemon
    meta, root = imagefiles.split(compression, rootfs=rootfs)
    fp = sha256(meta + root)
    meta_ext = imagefiles.EXTENSIONS[compression]
    meta_path = write(workdir, "meta" + meta_ext, meta)
    root_ext = meta_ext if rootfs == "tar" else ".squashfs"
    root_name = "rootfs" + root_ext
    root_path = write(workdir, root_name, root)
    out = d.lxc("image", "import", meta_path, root_path, "--public").stdout
    assert fp in out
    image = d.request("GET", f"/1.0/images/{fp}").metadata
    assert image["filename"] == root_name
    assert image["size"] == len(meta) + len(root)
    assert image["public"] is True
    assert {fp, fp + ".rootfs"} <= set(image_files(d))

    out_dir = os.path.join(workdir, "export")
    os.mkdir(out_dir)
    d.lxc("image", "export", fp, out_dir)
    assert sorted(os.listdir(out_dir)) == sorted([f"meta-{fp}{meta_ext}", f"{fp}{root_ext}"])
    assert read(os.path.join(out_dir, f"meta-{fp}{meta_ext}")) == meta
    assert read(os.path.join(out_dir, f"{fp}{root_ext}")) == root

    d.lxc("image", "delete", fp)
    assert not {fp, fp + ".rootfs"} & set(image_files(d))


def test_import_properties_and_public_headers(shared_daemon, workdir):
    """Properties given to `lxc image import` overlay metadata.yaml's; X-LXD-public accepts
    1/true/yes/on and nothing else; repeated X-LXD-properties headers override in order."""
    d = shared_daemon
    path = write(workdir, "img.tar.xz", imagefiles.unified("xz"))
    fp = sha256(read(path))
    d.lxc("image", "import", path, "os=custom", "extra=yes")
    image = d.request("GET", f"/1.0/images/{fp}").metadata
    assert image["properties"] == {"os": "custom", "release": "1.0", "description": "test image", "extra": "yes"}
    assert image["public"] is False
    d.lxc("image", "delete", fp)

    for value, public in [("1", True), ("true", True), ("Yes", True), ("on", True), ("0", False), ("no", False)]:
        data = imagefiles.unified("none")
        op = import_raw(d, data, {"X-LXD-public": value})
        assert op["metadata"] == {"fingerprint": sha256(data), "size": str(len(data))}
        assert d.request("GET", f"/1.0/images/{sha256(data)}").metadata["public"] is public, value
        d.wait_operation(d.request("DELETE", f"/1.0/images/{sha256(data)}"))

    data = imagefiles.unified("none")
    conn_headers = [("X-LXD-properties", "a=1&a=2&b=x"), ("X-LXD-properties", "b=y")]
    conn = UnixHTTPConnection(d.socket_path)
    try:
        conn.putrequest("POST", "/1.0/images")
        conn.putheader("Content-Length", str(len(data)))
        for name, value in conn_headers:
            conn.putheader(name, value)
        conn.endheaders(data)
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        conn.close()
    d.request("GET", f"{body['operation']}/wait")
    props = d.request("GET", f"/1.0/images/{sha256(data)}").metadata["properties"]
    assert props["a"] == "1" and props["b"] == "y"


def test_aliases(shared_daemon):
    """`lxc image alias create/list/rename/delete`, and the API's status codes."""
    d = shared_daemon
    fp = import_raw(d, imagefiles.unified("gzip"))["metadata"]["fingerprint"]
    d.lxc("image", "alias", "create", "first", fp[:12])
    assert "first" in d.lxc("image", "alias", "list").stdout
    entry = d.request("GET", "/1.0/images/aliases/first").metadata
    assert entry == {"name": "first", "description": "", "target": fp}
    assert "/1.0/images/aliases/first" in d.request("GET", "/1.0/images/aliases").metadata
    recursive = d.request("GET", "/1.0/images/aliases?recursion=1").metadata
    assert {"name": "first", "description": "", "target": fp} in recursive

    d.lxc("image", "alias", "rename", "first", "second")
    listing = d.lxc("image", "alias", "list").stdout
    assert "second" in listing and "first" not in listing
    assert d.request("GET", f"/1.0/images/{fp}").metadata["aliases"] == [{"name": "second", "description": ""}]

    # Status codes of the reference.
    assert d.request("POST", "/1.0/images/aliases", {"name": "second", "target": fp}).status == 409
    assert d.request("POST", "/1.0/images/aliases", {"name": "x", "target": "f" * 64}).status == 404
    assert d.request("POST", "/1.0/images/aliases", {"name": "", "target": fp}).status == 400
    assert d.request("POST", "/1.0/images/aliases", {"name": "y", "target": ""}).status == 400
    assert d.request("POST", "/1.0/images/aliases", {"name": "a/b", "target": fp}).status == 400
    created = d.request("POST", "/1.0/images/aliases", {"name": "third", "target": fp, "description": "d",
                                                        "type": "container"})
    assert created.status == 201 and created.headers["Location"] == "/1.0/images/aliases/third"
    assert d.request("POST", "/1.0/images/aliases/third", {"name": "second"}).status == 409
    assert d.request("POST", "/1.0/images/aliases/nope", {"name": "z"}).status == 404
    assert d.request("PUT", "/1.0/images/aliases/third", {"description": "only"}).status == 400
    assert d.request("PATCH", "/1.0/images/aliases/third", {"description": "patched"}).status == 200
    got = d.request("GET", "/1.0/images/aliases/third")
    assert got.metadata == {"name": "third", "description": "patched", "target": fp}
    assert d.request("PUT", "/1.0/images/aliases/third", {"target": fp}, headers={"If-Match": "bad"}).status == 412
    assert d.request("PUT", "/1.0/images/aliases/third", {"target": fp},
                     headers={"If-Match": got.headers["ETag"]}).status == 200
    assert d.request("GET", "/1.0/images/aliases/third").metadata["description"] == ""
    renamed = d.request("POST", "/1.0/images/aliases/third", {"name": "fourth"})
    assert renamed.status == 201 and renamed.headers["Location"] == "/1.0/images/aliases/fourth"

    d.lxc("image", "alias", "delete", "second")
    assert d.request("GET", "/1.0/images/aliases/second").status == 404
    assert d.request("DELETE", "/1.0/images/aliases/second").status == 404
    # Deleting the image removes the aliases left pointing at it.
    d.wait_operation(d.request("DELETE", f"/1.0/images/{fp}"))
    assert d.request("GET", "/1.0/images/aliases/fourth").status == 404


def test_show_edit_put_patch(shared_daemon):
    """`lxc image show`/`edit`, PUT replacing properties wholesale, PATCH merging, ETags, bad types."""
    d = shared_daemon
    fp = import_raw(d, imagefiles.unified("xz"))["metadata"]["fingerprint"]
    shown = yaml.safe_load(d.lxc("image", "show", fp).stdout)
    assert shown["public"] is False and shown["properties"]["os"] == "testos"

    edited = {"public": True, "auto_update": False, "properties": {"os": "edited"}}
    d.lxc("image", "edit", fp, input=yaml.safe_dump(edited))
    image = d.request("GET", f"/1.0/images/{fp}").metadata
    assert image["public"] is True and image["properties"] == {"os": "edited"}

    assert d.request("PATCH", f"/1.0/images/{fp}", {"properties": {"release": "2"}}).status == 200
    image = d.request("GET", f"/1.0/images/{fp}")
    assert image.metadata["properties"] == {"os": "edited", "release": "2"}
    assert image.metadata["public"] is True

    assert d.request("PUT", f"/1.0/images/{fp}", {"properties": {"x": "y"}}).status == 200
    image = d.request("GET", f"/1.0/images/{fp}").metadata
    assert image["properties"] == {"x": "y"} and image["public"] is False

    stale = d.request("GET", f"/1.0/images/{fp}").headers["ETag"]
    assert d.request("PATCH", f"/1.0/images/{fp}", {"public": True}, headers={"If-Match": stale}).status == 200
    assert d.request("PUT", f"/1.0/images/{fp}", {}, headers={"If-Match": stale}).status == 412
    for bad in ({"public": "yes"}, {"auto_update": 1}, {"properties": {"a": 1}}, {"properties": []}):
        answer = d.request("PATCH", f"/1.0/images/{fp}", bad)
        assert answer.status == 400, (bad, answer)
        assert list(bad)[0] in answer.json["error"]
    assert d.request("GET", f"/1.0/images/{fp}").metadata["public"] is True
    d.wait_operation(d.request("DELETE", f"/1.0/images/{fp}"))


def test_prefix_lookup_refresh_and_operations(shared_daemon):
    """A unique fingerprint prefix names the image; refresh of a local image says false;
    delete is an operation with the image as resource."""
    d = shared_daemon
    fp = import_raw(d, imagefiles.unified("gzip"))["metadata"]["fingerprint"]
    got = d.request("GET", f"/1.0/images/{fp[:10]}")
    assert got.status == 200 and got.metadata["fingerprint"] == fp
    assert got.metadata["last_used_at"] == "0001-01-01T00:00:00Z"
    assert got.metadata["cached"] is False and got.metadata["auto_update"] is False
    assert "update_source" not in got.metadata
    assert d.request("GET", "/1.0/images/00000000000000").status == 404

    refresh = d.request("POST", f"/1.0/images/{fp}/refresh")
    op = d.wait_operation(refresh)
    assert op["status"] == "Success" and op["metadata"] == {"refreshed": False}

    deleting = d.request("DELETE", f"/1.0/images/{fp[:12]}")
    assert deleting.json["metadata"]["resources"] == {"images": [f"/1.0/images/{fp}"]}
    assert deleting.json["metadata"]["description"] == "Deleting image"
    assert d.wait_operation(deleting)["status"] == "Success"
    assert d.request("DELETE", f"/1.0/images/{fp}").status == 404


def test_duplicate_import_refused(shared_daemon):
    """Importing the same bytes twice: the second is refused and the first image is untouched."""
    d = shared_daemon
    data = imagefiles.unified("xz")
    fp = import_raw(d, data)["metadata"]["fingerprint"]
    again = upload(d, data)
    assert again.status == 409, again
    assert again.json["error"] == "Image with same fingerprint already exists"
    assert d.request("GET", f"/1.0/images/{fp}").status == 200
    assert fp in image_files(d) and not spool_leftovers(d)
    d.wait_operation(d.request("DELETE", f"/1.0/images/{fp}"))


def test_fingerprint_mismatch_leaves_nothing(daemon):
    """A wrong X-LXD-fingerprint is refused, and no file, document or temp file remains."""
    data = imagefiles.unified("xz")
    answer = upload(daemon, data, {"X-LXD-fingerprint": "0" * 64})
    assert answer.status == 400
    assert answer.json["error"] == f"fingerprints don't match, got {sha256(data)} expected {'0' * 64}"
    assert daemon.request("GET", "/1.0/images").metadata == []
    assert image_files(daemon) == [] and not spool_leftovers(daemon)
    # The right fingerprint is accepted.
    op = import_raw(daemon, data, {"X-LXD-fingerprint": sha256(data)})
    assert op["metadata"]["fingerprint"] == sha256(data)


BAD_UPLOADS = {
    "random bytes": (os.urandom(4096), "Unsupported compression"),
    "truncated xz": (imagefiles.unified("xz")[:200], "Invalid image"),
    "no metadata.yaml": (imagefiles.tarball(imagefiles.rootfs_entries(), "gzip"), "metadata.yaml"),
    "no rootfs": (imagefiles.tarball([("metadata.yaml", imagefiles.metadata_yaml())], "gzip"), "rootfs"),
    "bad yaml": (imagefiles.tarball([("metadata.yaml", b"architecture: [x\n"), *imagefiles.rootfs_entries()]),
                 "metadata.yaml"),
    "unknown architecture": (imagefiles.unified("none", architecture="vax"), "unknown architecture"),
    "no creation date": (imagefiles.unified("none", creation_date=0), "Missing creation date."),
    "dot-dot member": (imagefiles.tarball([("metadata.yaml", imagefiles.metadata_yaml()),
                                           *imagefiles.rootfs_entries(), ("rootfs/../../evil", b"x")]), "'..'"),
    "absolute member": (imagefiles.tarball([("metadata.yaml", imagefiles.metadata_yaml()),
                                            *imagefiles.rootfs_entries(), ("/etc/evil", b"x")]), "absolute"),
    "member below a symlink": (imagefiles.tarball([
        ("metadata.yaml", imagefiles.metadata_yaml()), *imagefiles.rootfs_entries(),
        ("rootfs/escape", ("symlink", "/")), ("rootfs/escape/etc/evil", b"x")]), "below the symlink"),
    "hard link out": (imagefiles.tarball([("metadata.yaml", imagefiles.metadata_yaml()),
                                          *imagefiles.rootfs_entries(), ("rootfs/l", ("hardlink", "../x"))]),
                      "'..'"),
}


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
def test_bad_upload_is_400_and_leaves_nothing(shared_daemon, case):
    """Corrupt, non-tar or unsafe bodies are a 400 naming the problem; nothing is kept."""
    d = shared_daemon
    before = image_files(d)
    data, message = BAD_UPLOADS[case]
    answer = upload(d, data)
    assert answer.status == 400, answer
    assert message in answer.json["error"], answer.json["error"]
    assert image_files(d) == before and not spool_leftovers(d)
    assert sha256(data) not in json.dumps(images(d))


def test_bad_multipart_is_400(shared_daemon):
    """A multipart body with wrong part names, a VM rootfs or no closing boundary is refused."""
    d = shared_daemon
    meta, root = imagefiles.split("gzip")

    def body(parts, close=True):
        out = b""
        for name, data in parts:
            out += (b"--BOUND\r\nContent-Disposition: form-data; name=\"" + name.encode()
                    + b"\"; filename=\"f\"\r\nContent-Type: application/octet-stream\r\n\r\n" + data + b"\r\n")
        return out + (b"--BOUND--\r\n" if close else b"")

    headers = {"Content-Type": "multipart/form-data; boundary=BOUND"}
    cases = [
        (body([("rootfs", root), ("metadata", meta)]), "expected part 'metadata'"),
        (body([("metadata", meta), ("rootfs.img", root)]), "virtual machine"),
        (body([("metadata", meta), ("rootfs", root)], close=False), "closing boundary"),
        (body([("metadata", meta)]), "expected part 'rootfs'"),
    ]
    for data, message in cases:
        answer = d.request("POST", "/1.0/images", raw=data, headers=headers)
        assert answer.status == 400, answer
        assert message in answer.json["error"]
    assert not spool_leftovers(d)
    ok = d.request("POST", "/1.0/images", raw=body([("metadata", meta), ("rootfs", root)]), headers=headers)
    op = d.wait_operation(ok)
    assert op["metadata"]["fingerprint"] == sha256(meta + root)
    assert d.request("GET", f"/1.0/images/{sha256(meta + root)}").metadata["filename"] == "f"


def test_json_bodies(shared_daemon):
    """JSON bodies: unknown source types are a 400, remote sources are not implemented, and
    publishing needs a container name."""
    d = shared_daemon
    assert d.request("POST", "/1.0/images", {"source": {"type": "nope"}}).status == 400
    assert d.request("POST", "/1.0/images", {}).status == 400
    assert d.request("POST", "/1.0/images", raw=b"{broken", headers={"Content-Type": "application/json"}).status == 400
    assert d.request("POST", "/1.0/images", {"source": {"type": "url", "url": "https://x"}}).status == 501
    answer = d.request("POST", "/1.0/images", {"source": {"type": "container"}})
    assert answer.status == 400 and "source.name" in answer.json["error"]
    answer = d.request("POST", "/1.0/images", {"source": {"type": "container", "name": "c/s"}})
    assert answer.status == 400 and "snapshot" in answer.json["error"]
    answer = d.request("POST", "/1.0/images", {"source": {"type": "container", "name": "c"},
                                               "compression_algorithm": "no-such-compressor"})
    assert answer.status == 400


def test_pylxd(shared_daemon):
    """pylxd: images.create (unified, public; split), all(), get, delete."""
    pylxd = pytest.importorskip("pylxd")
    client = pylxd.Client(endpoint=shared_daemon.socket_path)
    data = imagefiles.unified("gzip")
    image = client.images.create(data, public=True)
    assert image.fingerprint == sha256(data)
    assert image.public is True
    assert sha256(data) in [i.fingerprint for i in client.images.all()]
    meta, root = imagefiles.split("xz")
    split_image = client.images.create(root, metadata=meta)
    assert split_image.fingerprint == sha256(meta + root)
    assert client.images.get(split_image.fingerprint[:16]).public is False
    image.delete(wait=True)
    split_image.delete(wait=True)
    remaining = [i.fingerprint for i in client.images.all()]
    assert sha256(data) not in remaining and sha256(meta + root) not in remaining


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def https_daemon():
    if os.geteuid() != 0:
        pytest.skip("integration tests run as root")
    d = Daemon(https=f"127.0.0.1:{_free_port()}").start()
    try:
        yield d
    finally:
        d.cleanup()


def _client_cert(directory):
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "untrusted")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA384()))
    crt = write(directory, "client.crt", cert.public_bytes(serialization.Encoding.PEM))
    pem = write(directory, "client.key", key.private_bytes(serialization.Encoding.PEM,
                                                            serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
    return crt, pem


def test_untrusted_access_and_secrets(https_daemon, workdir):
    """An untrusted HTTPS client sees public images only, and reads a private one (info and
    export) only with a secret issued for that image; the first use consumes the token."""
    requests = pytest.importorskip("requests")
    import urllib3

    urllib3.disable_warnings()
    d = https_daemon
    base = f"https://{d.https}"
    session = requests.Session()
    session.cert = _client_cert(workdir)
    session.verify = False
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify=False

    private_data, public_data, other_data = (imagefiles.unified("gzip") for _ in range(3))
    private = import_raw(d, private_data)["metadata"]["fingerprint"]
    public = import_raw(d, public_data, {"X-LXD-public": "true"})["metadata"]["fingerprint"]
    other = import_raw(d, other_data)["metadata"]["fingerprint"]
    d.request("POST", "/1.0/images/aliases", {"name": "pub", "target": public})
    d.request("POST", "/1.0/images/aliases", {"name": "priv", "target": private})

    assert session.get(f"{base}/1.0").json()["metadata"]["auth"] == "untrusted"
    assert session.get(f"{base}/1.0/images").json()["metadata"] == [f"/1.0/images/{public}"]
    listed = session.get(f"{base}/1.0/images?recursion=1").json()["metadata"]
    assert [i["fingerprint"] for i in listed] == [public]
    assert session.get(f"{base}/1.0/images/{public}").status_code == 200
    exported = session.get(f"{base}/1.0/images/{public}/export")
    assert exported.status_code == 200 and exported.content == public_data
    assert exported.headers["Content-Disposition"] == f"inline;filename={public}.tar.gz"
    assert session.get(f"{base}/1.0/images/aliases/pub").json()["metadata"]["target"] == public
    assert session.get(f"{base}/1.0/images/aliases/priv").status_code == 404
    assert session.get(f"{base}/1.0/images/aliases").status_code == 403
    assert session.get(f"{base}/1.0/images/{private}").status_code == 404
    assert session.get(f"{base}/1.0/images/{private}/export").status_code == 404
    assert session.post(f"{base}/1.0/images/{private}/secret").status_code == 403

    token = d.request("POST", f"/1.0/images/{private}/secret")
    assert token.status == 202
    op = token.json["metadata"]
    assert op["class"] == "token" and op["status"] == "Running" and op["may_cancel"] is True
    assert op["resources"] == {"images": [f"/1.0/images/{private}"]}
    secret = op["metadata"]["secret"]
    assert isinstance(secret, str) and len(secret) == 64

    assert session.get(f"{base}/1.0/images/{other}?secret={secret}").status_code == 404
    assert session.get(f"{base}/1.0/images/{private}?secret={'0' * 64}").status_code == 404
    got = session.get(f"{base}/1.0/images/{private}?secret={secret}")
    assert got.status_code == 200 and got.json()["metadata"]["fingerprint"] == private
    assert d.request("GET", token.headers["Location"]).metadata["status"] == "Cancelled"
    exported = session.get(f"{base}/1.0/images/{private}/export?secret={secret}")
    assert exported.status_code == 200 and exported.content == private_data
    assert session.get(f"{base}/1.0/images/{private}/export").status_code == 404


def test_list_filter(shared_daemon):
    """`filter=` (what `lxc image list` sends once api_filtering is advertised): empty means
    all, `key eq value` selects, a malformed filter is a 400 (lxc then lists unfiltered)."""
    d = shared_daemon
    public = import_raw(d, imagefiles.unified("none"), {"X-LXD-public": "1"})["metadata"]["fingerprint"]
    private = import_raw(d, imagefiles.unified("none"))["metadata"]["fingerprint"]
    everything = [i["fingerprint"] for i in d.request("GET", "/1.0/images?filter=&recursion=1").metadata]
    assert {public, private} <= set(everything)
    selected = d.request("GET", "/1.0/images?recursion=1&filter=public%20eq%20true").metadata
    assert public in [i["fingerprint"] for i in selected] and private not in [i["fingerprint"] for i in selected]
    urls = d.request("GET", f"/1.0/images?filter=fingerprint%20eq%20{private}").metadata
    assert urls == [f"/1.0/images/{private}"]
    assert d.request("GET", "/1.0/images?filter=public%20is%20true").status == 400
