"""The migration protocol's messages on the wire, and the progress text."""

import pytest

from lxdtx.migration import messages as m
from lxdtx.migration.progress import size_string


def test_wire_bytes_are_proto2():
    """Field numbers and types as LXD's migrate.proto: the bytes a Go peer sends and expects."""
    assert m.MigrationControl(success=True).SerializeToString() == b"\x08\x01"
    assert m.MigrationControl(success=False, message="no").SerializeToString() == b"\x08\x00\x12\x02no"
    assert m.MigrationSync(finalPreDump=True).SerializeToString() == b"\x08\x01"
    header = m.MigrationHeader(fs=m.BTRFS, criu=m.CRIU_NONE, predump=True)
    # fs=1 (field 1), criu=NONE=2 (field 2), predump (field 7: 6 is retired)
    assert header.SerializeToString() == b"\x08\x01\x10\x02\x38\x01"


def test_header_round_trip():
    header = m.MigrationHeader(fs=m.RSYNC)
    header.idmap.extend(m.idmap_entries('[{"Isuid":true,"Isgid":false,"Hostid":100000,"Nsid":0,"Maprange":65536}]'))
    header.snapshotNames.append("s1")
    header.snapshots.append(m.Snapshot(
        name="s1", localConfig=m.config_list({"user.a": "b"}), profiles=["default"], ephemeral=False,
        localDevices=m.device_list({"root": {"path": "/", "type": "disk"}}), architecture=m.ARCHITECTURES["x86_64"],
        stateful=False, creation_date=1700000000, last_used_date=0))
    back = m.decode(m.MigrationHeader, header.SerializeToString())
    assert not back.HasField("criu")
    assert m.idmap_json(back.idmap) == '[{"Isuid":true,"Isgid":false,"Hostid":100000,"Nsid":0,"Maprange":65536}]'
    snapshot = back.snapshots[0]
    assert m.config_map(snapshot.localConfig) == {"user.a": "b"}
    assert m.device_map(snapshot.localDevices) == {"root": {"path": "/", "type": "disk"}}
    assert m.ARCHITECTURE_NAMES[snapshot.architecture] == "x86_64"


@pytest.mark.parametrize("payload", [b"", b"\xff\xff\xff", b"\x12\x02no"])
def test_decode_refuses_what_is_not_a_whole_message(payload):
    with pytest.raises(ValueError, match="not a MigrationControl"):
        m.decode(m.MigrationControl, payload)


def test_size_string_as_lxd_writes_it():
    assert size_string(999) == "999B"
    assert size_string(42130000) == "42.13MB"
    assert size_string(10_200_000) == "10.20MB"
    assert size_string(1_500_000_000_000) == "1.50TB"


def test_rsync_features_negotiation():
    """A header without `bidirectional` means LXD 3.7's fixed set; field 100 (ours) is a plain
    optional field an LXD peer skips."""
    legacy = m.MigrationHeader(fs=m.RSYNC)
    assert m.features_of(legacy) == {"xattrs", "delete", "compress"}
    offer = m.MigrationHeader(fs=m.RSYNC)
    m.set_features(offer, m.FEATURES)
    wire = offer.SerializeToString()
    assert b"\x42" in wire  # field 8, length-delimited
    assert m.features_of(m.decode(m.MigrationHeader, wire)) == set(m.FEATURES)
    answer = m.MigrationHeader(fs=m.RSYNC)
    m.set_features(answer, {"xattrs", "bidirectional"})
    assert m.features_of(answer) == {"xattrs", "bidirectional"}
