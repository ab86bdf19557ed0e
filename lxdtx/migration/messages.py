# -*- test-case-name: tests.unit.test_migration_messages -*-
"""The migration protocol's control messages (proto2, package `migration`), as LXD's
`migrate.proto` declares them: built once from a descriptor, encoded by protobuf.

Each message travels as one binary websocket frame: the header on `control` both
ways, `MigrationControl` (the outcome) on `control`, `MigrationSync` on `criu`.
"""

import json

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
REQUIRED, OPTIONAL, REPEATED = _F.LABEL_REQUIRED, _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_SCALARS = {"bool": _F.TYPE_BOOL, "int32": _F.TYPE_INT32, "int64": _F.TYPE_INT64, "string": _F.TYPE_STRING}

# Enums: name -> [(value name, number)].
_ENUMS = {
    "MigrationFSType": [("RSYNC", 0), ("BTRFS", 1), ("ZFS", 2), ("RBD", 3)],
    "CRIUType": [("CRIU_RSYNC", 0), ("PHAUL", 1), ("NONE", 2)],
}

# Messages: name -> [(label, type, field name, number)]; a type is a scalar or a name above.
_MESSAGES = {
    "IDMapType": [(REQUIRED, "bool", "isuid", 1), (REQUIRED, "bool", "isgid", 2),
                  (REQUIRED, "int32", "hostid", 3), (REQUIRED, "int32", "nsid", 4),
                  (REQUIRED, "int32", "maprange", 5)],
    "Config": [(REQUIRED, "string", "key", 1), (REQUIRED, "string", "value", 2)],
    "Device": [(REQUIRED, "string", "name", 1), (REPEATED, "Config", "config", 2)],
    "Snapshot": [(REQUIRED, "string", "name", 1), (REPEATED, "Config", "localConfig", 2),
                 (REPEATED, "string", "profiles", 3), (REQUIRED, "bool", "ephemeral", 4),
                 (REPEATED, "Device", "localDevices", 5), (REQUIRED, "int32", "architecture", 6),
                 (REQUIRED, "bool", "stateful", 7), (OPTIONAL, "int64", "creation_date", 8),
                 (OPTIONAL, "int64", "last_used_date", 9), (OPTIONAL, "int64", "expiry_date", 10)],
    # Fields 100 and up are ours, offered only by lxdtx (LXD ignores them and leaves them out
    # of its answer, so with LXD the flags are LXD's own): 100, -H and -A on both ends; 101,
    # the receiver tells the sender it negotiates checksums (xxh128, not md5) as rsync's own
    # remote shell sessions do.
    "rsyncFeatures": [(OPTIONAL, "bool", "xattrs", 1), (OPTIONAL, "bool", "delete", 2),
                      (OPTIONAL, "bool", "compress", 3), (OPTIONAL, "bool", "bidirectional", 4),
                      (OPTIONAL, "bool", "hardlinks_acls", 100), (OPTIONAL, "bool", "negotiation", 101)],
    # No field 6: LXD retired it.
    "MigrationHeader": [(REQUIRED, "MigrationFSType", "fs", 1), (OPTIONAL, "CRIUType", "criu", 2),
                        (REPEATED, "IDMapType", "idmap", 3), (REPEATED, "string", "snapshotNames", 4),
                        (REPEATED, "Snapshot", "snapshots", 5), (OPTIONAL, "bool", "predump", 7),
                        (OPTIONAL, "rsyncFeatures", "rsyncFeatures", 8), (OPTIONAL, "bool", "refresh", 9)],
    "MigrationControl": [(REQUIRED, "bool", "success", 1), (OPTIONAL, "string", "message", 2)],
    "MigrationSync": [(REQUIRED, "bool", "finalPreDump", 1)],
}


def _file():
    proto = descriptor_pb2.FileDescriptorProto(name="lxdtx/migration/migrate.proto", package="migration",
                                               syntax="proto2")
    for name, values in _ENUMS.items():
        enum = proto.enum_type.add(name=name)
        for value, number in values:
            enum.value.add(name=value, number=number)
    for name, fields in _MESSAGES.items():
        message = proto.message_type.add(name=name)
        for label, kind, field, number in fields:
            entry = message.field.add(name=field, number=number, label=label)
            if kind in _SCALARS:
                entry.type = _SCALARS[kind]
            else:
                entry.type = _F.TYPE_ENUM if kind in _ENUMS else _F.TYPE_MESSAGE
                entry.type_name = f".migration.{kind}"
    return proto


_classes = message_factory.GetMessages([_file()], pool=descriptor_pool.DescriptorPool())

RsyncFeatures = _classes["migration.rsyncFeatures"]
IDMapType = _classes["migration.IDMapType"]
Config = _classes["migration.Config"]
Device = _classes["migration.Device"]
Snapshot = _classes["migration.Snapshot"]
MigrationHeader = _classes["migration.MigrationHeader"]
MigrationControl = _classes["migration.MigrationControl"]
MigrationSync = _classes["migration.MigrationSync"]

RSYNC, BTRFS, ZFS, RBD = 0, 1, 2, 3
CRIU_RSYNC, PHAUL, CRIU_NONE = 0, 1, 2

# LXD's numeric architecture ids (`osarch`).
ARCHITECTURES = {"i686": 1, "x86_64": 2, "armv7l": 3, "aarch64": 4, "ppc": 5, "ppc64": 6, "ppc64le": 7,
                 "s390x": 8}
ARCHITECTURE_NAMES = {number: name for name, number in ARCHITECTURES.items()}


# The rsync features a header offers or answers (names as LXD's), ours last.
FEATURES = ("xattrs", "delete", "compress", "bidirectional", "hardlinks_acls", "negotiation")
# What a peer that predates feature negotiation (no `bidirectional`) uses.
LEGACY_FEATURES = frozenset({"xattrs", "delete", "compress"})


def features_of(header):
    """The rsync features a header names; a header without `bidirectional` means LXD 3.7's set."""
    found = {name for name in FEATURES if getattr(header.rsyncFeatures, name)}
    return found if "bidirectional" in found else set(LEGACY_FEATURES)


def set_features(header, names):
    for name in names:
        setattr(header.rsyncFeatures, name, True)


def config_list(mapping):
    """[Config] of a string map, in key order."""
    return [Config(key=k, value=str(v)) for k, v in sorted(mapping.items())]


def config_map(entries):
    return {entry.key: entry.value for entry in entries}


def device_list(devices):
    return [Device(name=name, config=config_list(device)) for name, device in sorted(devices.items())]


def device_map(entries):
    return {entry.name: config_map(entry.config) for entry in entries}


def idmap_entries(text):
    """IDMapType entries of a `volatile.last_state.idmap` value (LXD's JSON form)."""
    return [IDMapType(isuid=bool(e["Isuid"]), isgid=bool(e["Isgid"]), hostid=int(e["Hostid"]),
                      nsid=int(e["Nsid"]), maprange=int(e["Maprange"])) for e in json.loads(text or "[]")]


def idmap_json(entries):
    """The `volatile.last_state.idmap` value of IDMapType entries."""
    return json.dumps([{"Isuid": e.isuid, "Isgid": e.isgid, "Hostid": e.hostid, "Nsid": e.nsid,
                        "Maprange": e.maprange} for e in entries], separators=(",", ":"))


def decode(cls, payload):
    """A message of `cls` from one frame; ValueError for bytes that are not one."""
    message = cls()
    try:
        message.ParseFromString(payload)
    except Exception as e:  # protobuf's DecodeError, or a required field missing
        raise ValueError(f"not a {cls.DESCRIPTOR.name}: {e}") from None
    if not message.IsInitialized():
        raise ValueError(f"not a {cls.DESCRIPTOR.name}: missing {', '.join(message.FindInitializationErrors())}")
    return message
