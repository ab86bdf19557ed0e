"""Range headers for file downloads."""

from twisted.trial.unittest import SynchronousTestCase

from lxdtx.streaming import byte_range


class ByteRangeTests(SynchronousTestCase):
    def test_whole_file(self):
        """No header, another unit, several ranges or a reversed one: the whole file."""
        for header in (None, "", "lines=0-4", "bytes=0-1,4-5", "bytes=-", "bytes=9-3"):
            self.assertIsNone(byte_range(header, 100), header)

    def test_ranges(self):
        self.assertEqual(byte_range("bytes=0-9", 100), (0, 10))
        self.assertEqual(byte_range("bytes=90-", 100), (90, 100))
        self.assertEqual(byte_range("bytes=90-500", 100), (90, 100))
        self.assertEqual(byte_range("bytes=-10", 100), (90, 100))
        self.assertEqual(byte_range("bytes=-500", 100), (0, 100))

    def test_unsatisfiable(self):
        """Starting at or past the end: 416 with `bytes */size`."""
        for header, size in (("bytes=100-", 100), ("bytes=100-200", 100), ("bytes=-0", 100), ("bytes=0-", 0)):
            with self.assertRaises(ValueError) as caught:
                byte_range(header, size)
            self.assertEqual(str(caught.exception), f"bytes */{size}")
