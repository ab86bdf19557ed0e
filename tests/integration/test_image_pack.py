"""Publishing a directory into an image (every compression, the server default) and
unpacking stored images, driven on a real reactor by tests/integration/imagestore_driver.py;
the packed files must import back into a daemon through `lxc image import`."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
import yaml

from tests.daemonproc import ROOT

EXPECTED_FORMAT = {"gzip": "gzip", "bzip2": "bzip2", "lzma": "lzma", "xz": "xz", "none": "tar"}


@pytest.fixture(scope="module")
def report():
    if os.geteuid() != 0:
        pytest.skip("publishing keeps owners and xattrs only as root")
    workdir = tempfile.mkdtemp(prefix="lxdtx-pack-", dir="/var/tmp")
    try:
        run = subprocess.run([sys.executable, "-m", "tests.integration.imagestore_driver", workdir],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-5000:]
        yield json.loads(run.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize("compression", sorted(EXPECTED_FORMAT))
def test_publish_each_compression(report, compression):
    """create_from_directory packs with each compressor; the record has exactly the given
    properties and the aliases; unpacking restores owners, modes, links, xattrs and ACLs."""
    published = report["published"][compression]
    assert published["format"] == EXPECTED_FORMAT[compression]
    image = published["image"]
    assert image["properties"] == {"os": "published"}
    assert image["public"] is True
    assert image["filename"] == f"pub-{compression}"
    assert image["aliases"] == [{"name": f"pub-{compression}", "description": "made here"}]
    assert image["created_at"].startswith("2017-07-14")  # the container's own creation_date
    with open(published["file"], "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == published["fingerprint"]
    meta = yaml.safe_load(published["metadata_yaml"])
    assert meta["properties"] == {"os": "published"}
    assert meta["creation_date"] == 1500000000
    assert meta["templates"]["/etc/hostname"]["template"] == "hostname.tpl"
    facts = published["facts"]
    assert facts["metadata"] and facts["templates"] == ["hostname.tpl"]
    assert facts["tool_owner"] == [1000, 1001] and facts["tool_mode"] == "0o4755"
    assert facts["link"] == "/bin/tool" and facts["xattr"] == "kept"
    if "acl" in facts:
        assert facts["acl"]


def test_each_compression_is_its_own_image(report):
    """Every compression gives its own fingerprint (the image is stored once per content)."""
    fps = {p["fingerprint"] for p in report["published"].values()}
    assert len(fps) == len(EXPECTED_FORMAT)


def test_server_default_and_generated_metadata(report):
    """Without a per-request algorithm `images.compression_algorithm` applies; a directory
    without metadata.yaml gets one with the host architecture, a creation date and the properties."""
    default = report["default"]
    assert default["format"] == "bzip2"
    meta = yaml.safe_load(default["metadata_yaml"])
    assert meta["architecture"] == default["image"]["architecture"]
    assert meta["creation_date"] > 1500000000
    assert meta["properties"] == {"description": "generated"}
    assert default["image"]["public"] is False


def test_failed_publish_leaves_nothing(report):
    """An alias already taken, an unknown compressor or a missing rootfs: clear errors, no
    image record, no file, no temporary directory."""
    failures = report["failures"]
    assert failures["alias"] == "Alias already exists: pub-gzip"
    assert "no-such-compressor" in failures["compressor"]
    assert "rootfs" in failures["no rootfs"]
    assert report["count_unchanged"]
    assert report["spool_left"] == []
    assert report["image_files"] == len(EXPECTED_FORMAT) + 1


def test_unpack_uploaded_images(report):
    """Unified (lzma) and split (tar, squashfs) uploads unpack to metadata.yaml, templates/
    and rootfs/; mark_used sets last_used_at."""
    unpacked = report["unpacked"]
    expected = {"unified-lzma": "u1", "split-tar": "s1"}
    if shutil.which("mksquashfs"):
        expected["split-squashfs"] = "q1"
    assert set(unpacked) == set(expected)
    for name, nonce in expected.items():
        assert unpacked[name]["nonce"] == nonce
        assert unpacked[name]["metadata"] and unpacked[name]["templates"] == ["hostname.tpl"]
        assert unpacked[name]["sh"] == "busybox"
        assert unpacked[name]["last_used_at"] != "0001-01-01T00:00:00Z"


def test_failed_unpack_removes_target(report):
    """An unpack that fails (image file gone) reports why and removes the directory it made."""
    assert "tar" in report["unpack_failure"]
    assert report["failed_target_exists"] is False


@pytest.mark.parametrize("compression", sorted(EXPECTED_FORMAT))
def test_published_file_imports_back(report, shared_daemon, compression):
    """The packed file imports into a daemon with `lxc image import` under the same fingerprint."""
    published = report["published"][compression]
    out = shared_daemon.lxc("image", "import", published["file"]).stdout
    assert f"fingerprint: {published['fingerprint']}" in out
    image = shared_daemon.request("GET", f"/1.0/images/{published['fingerprint']}").metadata
    assert image["architecture"] == published["image"]["architecture"]
    # The published metadata.yaml carries the publish properties in place of the container's.
    assert image["properties"] == {"os": "published"}
