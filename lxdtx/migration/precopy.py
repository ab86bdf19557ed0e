# -*- test-case-name: tests.unit.test_precopy -*-
"""Pre-copy of a live migration (`migration_pre_copy`): how many memory rounds, and when to stop.

With `migration.incremental.memory` set, where the kernel tracks dirty pages (`criu check
--feature mem_dirty_track`) on both ends, the source pre-dumps the running container's memory
and sends it, round after round, each round writing only the pages dirtied since the one
before; the container stops only for the final dump, which then holds little. Rounds end once
`migration.incremental.memory.iterations` were made, or once a round found more than
`migration.incremental.memory.goal` percent of the memory unchanged since the round before
(CRIU's `stats-dump`: pages written against pages skipped as in the parent).

The layout is LXD's, so either end may be LXD: the pre-dumps in `000`, `001`, ... of the
checkpoint directory, each the parent of the next (`--prev-images-dir ../NNN`), the final
dump in `final`, whose parent is the last pre-dump. After each round the source sends the
whole checkpoint directory over the `criu` websocket (rsync), then a MigrationSync saying
whether it was the last round; after the last one, the final dump.
"""

import os
import struct

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from lxdtx.config.types import is_true

ENABLED_KEY = "migration.incremental.memory"
ITERATIONS_KEY = "migration.incremental.memory.iterations"
GOAL_KEY = "migration.incremental.memory.goal"
FINAL = "final"
STATS = "stats-dump"
_MAGICS = (0x54564319, 0x55105940)  # CRIU's image and service-file magics
_STATS_MAGIC = 0x57093306


class Settings:
    """A container's pre-copy settings, from its expanded config (LXD's defaults: 10, 70)."""

    def __init__(self, config):
        self.enabled = is_true(config.get(ENABLED_KEY, "false"))
        self.iterations = max(1, _int(config.get(ITERATIONS_KEY), 10))
        self.goal = min(100, _int(config.get(GOAL_KEY), 70))


def _int(value, default):
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        return default


class Rounds:
    """The pre-dumps of one migration: the directory of each, and whether it is the last."""

    def __init__(self, settings):
        self.settings = settings
        self.count = 0

    def next_directory(self):
        """The directory of the next pre-dump, and its parent's relative to it (None: the first)."""
        parent = f"../{self.count - 1:03d}" if self.count else None
        return f"{self.count:03d}", parent

    def done(self, written, skipped):
        """After a pre-dump that wrote `written` pages and skipped `skipped` as unchanged: was
        it the last round?"""
        self.count += 1
        if self.count >= self.settings.iterations:
            return True
        total = written + skipped
        if total == 0:
            return True  # no memory to speak of
        unchanged = 100 - (100 * written) // total
        return unchanged > self.settings.goal

    def final_parent(self):
        """The final dump's parent, relative to `final`: the last pre-dump."""
        return f"../{self.count - 1:03d}"


def _stats_classes():
    proto = descriptor_pb2.FileDescriptorProto(name="lxdtx/migration/criu-stats.proto", package="criu",
                                               syntax="proto2")
    F = descriptor_pb2.FieldDescriptorProto
    dump = proto.message_type.add(name="dump_stats_entry")
    for name, number in (("pages_scanned", 5), ("pages_skipped_parent", 6), ("pages_written", 7)):
        dump.field.add(name=name, number=number, label=F.LABEL_OPTIONAL, type=F.TYPE_UINT64)
    entry = proto.message_type.add(name="stats_entry")
    entry.field.add(name="dump", number=1, label=F.LABEL_OPTIONAL, type=F.TYPE_MESSAGE,
                    type_name=".criu.dump_stats_entry")
    return message_factory.GetMessages([proto], pool=descriptor_pool.DescriptorPool())["criu.stats_entry"]


StatsEntry = _stats_classes()


def read_stats(directory):
    """(pages written, pages skipped as in the parent) of the dump in `directory`; ValueError
    for a stats file that is not CRIU's. Blocking."""
    with open(os.path.join(directory, STATS), "rb") as f:
        data = f.read(1 << 16)
    if len(data) < 12:
        raise ValueError("CRIU's stats-dump is cut short")
    first, magic, size = struct.unpack_from("<III", data)
    if first not in _MAGICS or magic != _STATS_MAGIC or len(data) < 12 + size:
        raise ValueError("not CRIU's stats-dump")
    entry = StatsEntry()
    entry.ParseFromString(data[12:12 + size])
    return entry.dump.pages_written, entry.dump.pages_skipped_parent
