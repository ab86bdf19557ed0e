"""The check of btrfs send streams from optimized backups, on streams built here command by command."""

import os
import shutil
import struct
import tempfile
import unittest
import uuid

from lxdtx.storage import btrfs_stream as bs

A, B, OTHER = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def tlv(kind, data):
    return struct.pack("<HH", kind, len(data)) + data


def command(cmd, *attrs):
    payload = b"".join(attrs)
    return struct.pack("<IHI", len(payload), cmd, 0) + payload


def subvol(name, own):
    return command(bs.SUBVOL, tlv(bs.A_PATH, name.encode()), tlv(bs.A_UUID, own.bytes), tlv(2, b"\0" * 8))


def snapshot(name, own, parent):
    return command(bs.SNAPSHOT, tlv(bs.A_PATH, name.encode()), tlv(bs.A_UUID, own.bytes), tlv(2, b"\0" * 8),
                   tlv(bs.A_CLONE_UUID, parent.bytes), tlv(21, b"\0" * 8))


def write(path, data=b"data"):
    return command(bs.WRITE, tlv(bs.A_PATH, path.encode()), tlv(18, b"\0" * 8), tlv(bs.A_DATA, data))


def stream(*commands, version=1, end=True):
    return bs.MAGIC + struct.pack("<I", version) + b"".join(commands) + (command(bs.END) if end else b"")


class StreamCheckTests(unittest.TestCase):
    """What a stream may hold to be received."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="lxdtx-stream-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def check(self, data, **kwargs):
        path = os.path.join(self.dir, "s.bin")
        with open(path, "wb") as f:
            f.write(data)
        kwargs.setdefault("name", "s0")
        return bs.check(path, **kwargs)

    def refused(self, data, text, **kwargs):
        with self.assertRaises(bs.StreamError) as caught:
            self.check(data, **kwargs)
        self.assertIn(text, str(caught.exception))

    def test_full_and_incremental(self):
        """A full stream, then one relative to it, pass and say their UUIDs."""
        first = self.check(stream(subvol("s0", A), write("f", b"x" * 60000)))
        self.assertEqual((first.name, first.uuid, first.parent), ("s0", A, None))
        second = self.check(stream(snapshot("s1", B, A), write("f")), name="s1", parent=A, chain=[A])
        self.assertEqual((second.uuid, second.parent), (B, A))

    def test_parent_must_be_the_one_before(self):
        """A parent other than the stream before (another container's subvolume) is refused, as is
        a full stream where an incremental one is expected and the other way round."""
        self.refused(stream(snapshot("s1", B, OTHER)), "not the snapshot before it", name="s1", parent=A)
        self.refused(stream(snapshot("s0", B, A)), "not the snapshot before it")
        self.refused(stream(subvol("s1", B)), "is a full stream", name="s1", parent=A)

    def test_name(self):
        """The subvolume must have the expected name; one subvolume only."""
        self.refused(stream(subvol("../x", A)), "not 's0'")
        self.refused(stream(subvol("s0", A), subvol("s0", B)), "more than one subvolume")

    def test_clone_sources(self):
        """Clones come from the stream itself or the chain before it, nowhere else."""
        def clone(source):
            return command(bs.CLONE, tlv(bs.A_PATH, b"f"), tlv(bs.A_CLONE_UUID, source.bytes),
                           tlv(bs.A_CLONE_PATH, b"g"))
        self.check(stream(subvol("s0", A), clone(A)))
        self.check(stream(snapshot("s1", B, A), clone(A)), name="s1", parent=A, chain=[A])
        self.refused(stream(subvol("s0", A), clone(OTHER)), "clones data from a subvolume outside")

    def test_devices_and_paths(self):
        """Device nodes and paths leaving the subvolume are refused; fifos pass."""
        def mknod(mode):
            return command(bs.MKNOD, tlv(bs.A_PATH, b"dev"), tlv(bs.A_MODE, struct.pack("<Q", mode)),
                           tlv(8, b"\0" * 8))
        self.refused(stream(subvol("s0", A), mknod(0o020644)), "device node")
        self.refused(stream(subvol("s0", A), mknod(0o060644)), "device node")
        self.check(stream(subvol("s0", A), mknod(0o010644)))
        self.refused(stream(subvol("s0", A), write("../../etc/passwd")), "leaves its subvolume")
        self.refused(stream(subvol("s0", A), write("/etc/passwd")), "leaves its subvolume")
        link = command(bs.LINK, tlv(bs.A_PATH, b"a"), tlv(bs.A_PATH_LINK, b"../b"))
        self.refused(stream(subvol("s0", A), link), "hard link")
        symlink = command(bs.SYMLINK, tlv(bs.A_PATH, b"a"), tlv(3, b"\0" * 8), tlv(bs.A_PATH_LINK, b"/"))
        self.check(stream(subvol("s0", A), symlink))  # a symlink's target is data

    def test_framing(self):
        """Not a stream, cut short, no end, data after the end, unknown commands: refused."""
        self.refused(b"x" * 40, "not a btrfs send stream")
        self.refused(stream(subvol("s0", A), end=False), "without its end command")
        self.refused(stream(subvol("s0", A))[:-5], "cut short")
        self.refused(stream(subvol("s0", A)) + b"x", "data after the end")
        self.refused(stream(subvol("s0", A), command(99)), "unknown command")
        self.refused(stream(write("f")), "comes before the subvolume")
        self.refused(stream(subvol("s0", A), version=9), "version 9")
        huge = struct.pack("<IHI", 1 << 30, bs.WRITE, 0)
        self.refused(stream(subvol("s0", A), end=False) + huge, "longer than the stream")

    def test_version_2_write(self):
        """In version 2 a write's data runs to the end of its command."""
        data = command(bs.WRITE, tlv(bs.A_PATH, b"f"), tlv(18, b"\0" * 8), struct.pack("<HH", bs.A_DATA, 0) + b"z" * 9)
        self.check(stream(subvol("s0", A), data, version=2))


class IncrementalCheckTests(unittest.TestCase):
    """The same check fed a stream in pieces, as a migration's websocket brings it."""

    def feed(self, data, size, **kwargs):
        checker = bs.Checker(**kwargs)
        for start in range(0, len(data), size):
            checker.feed(data[start:start + size])
        return checker.finish()

    def test_any_split_gives_the_same_answer(self):
        """Byte by byte or in odd pieces, a good stream passes and a bad one is refused."""
        good = stream(snapshot("s1", B, A), write("f", b"x" * 50000), write("g"))
        bad = stream(snapshot("s1", B, A), write("f", b"x" * 50000), write("../g"))
        for size in (1, 7, 10, 4096, len(good)):
            self.assertEqual(self.feed(good, size, name="s1", parent=A, chain=[A]).uuid, B)
            with self.assertRaises(bs.StreamError):
                self.feed(bad, size, name="s1", parent=A, chain=[A])

    def test_refused_in_the_piece_that_holds_it(self):
        """A hostile parent is refused as soon as its command has come, before the rest."""
        checker = bs.Checker(parent=A)
        data = stream(snapshot("s1", B, OTHER), write("f", b"x" * 60000))
        with self.assertRaises(bs.StreamError) as caught:
            checker.feed(data[:200])
        self.assertIn("not the snapshot before it", str(caught.exception))

    def test_write_data_is_not_kept(self):
        """The data of a write goes by: what the checker holds stays small."""
        checker = bs.Checker()
        checker.feed(stream(subvol("s0", A), end=False))
        big = write("f", b"y" * 60000)
        checker.feed(big[:30000])
        self.assertLessEqual(len(checker._buffer), 8192)
        self.assertGreater(checker.skip, 0)
        checker.feed(big[30000:] + command(bs.END))
        self.assertEqual(checker.finish().name, "s0")

    def test_any_name_once(self):
        """Without an expected name, the subvolume's is one path component not taken before."""
        self.assertEqual(self.feed(stream(subvol(".migration-send", A)), 64).name, ".migration-send")
        with self.assertRaises(bs.StreamError) as caught:
            self.feed(stream(subvol("s1", A)), 64, taken={"s1"})
        self.assertIn("came before", str(caught.exception))
        for name in ("a/b", "..", ""):
            with self.assertRaises(bs.StreamError) as caught:
                self.feed(stream(subvol(name, A)), 64)
            self.assertIn("not one path component", str(caught.exception))

    def test_bounds(self):
        """A command other than a write longer than btrfs send makes one is refused at its header;
        a stream cut inside a write is cut short; data after the end is refused."""
        checker = bs.Checker()
        checker.feed(stream(subvol("s0", A), end=False))
        with self.assertRaises(bs.StreamError) as caught:
            checker.feed(struct.pack("<IHI", 1 << 20, bs.RENAME, 0))
        self.assertIn("longer than btrfs send makes it", str(caught.exception))
        cut = stream(subvol("s0", A), write("f", b"x" * 9000), end=False)[:-10]
        with self.assertRaises(bs.StreamError) as caught:
            self.feed(cut, 100)
        self.assertIn("cut short", str(caught.exception))
        with self.assertRaises(bs.StreamError) as caught:
            self.feed(stream(subvol("s0", A)) + b"\0", 1000)
        self.assertIn("data after the end", str(caught.exception))
