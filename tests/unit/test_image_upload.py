"""Upload headers, the streaming multipart reader, and the multipart export layout."""

import io

from hypothesis import given
from hypothesis import strategies as st
from requests_toolbelt import MultipartEncoder
from twisted.trial.unittest import SynchronousTestCase

from lxdtx.image import export, upload
from lxdtx.image.invalid import ImageFormatError


class HeaderTests(SynchronousTestCase):
    """X-LXD-public, X-LXD-properties and the multipart Content-Type."""

    def test_public(self):
        """`1` (pylxd), `true` (lxc), `yes`, `on` mean public; anything else does not."""
        for value in ("1", "true", "TRUE", " yes ", "on"):
            self.assertTrue(upload.is_public(value), value)
        for value in (None, "", "0", "false", "2", "public"):
            self.assertFalse(upload.is_public(value), value)

    def test_properties(self):
        """URL-query encoded; first value wins inside a header, later headers override."""
        self.assertEqual(upload.parse_properties(["os=Ubuntu&release=18.04&os=Debian", "release=20.04&x=a%20b"]),
                         {"os": "Ubuntu", "release": "20.04", "x": "a b"})
        self.assertEqual(upload.parse_properties([]), {})
        self.assertEqual(upload.parse_properties(["empty="]), {"empty": ""})

    def test_boundary(self):
        """multipart/form-data gives its boundary (quoted or not); other types give None."""
        self.assertEqual(upload.multipart_boundary("multipart/form-data; boundary=abc123"), "abc123")
        self.assertEqual(upload.multipart_boundary('Multipart/Form-Data; boundary="a b"'), "a b")
        for value in (None, "", "application/octet-stream", "application/json"):
            self.assertIsNone(upload.multipart_boundary(value))
        with self.assertRaises(ImageFormatError):
            upload.multipart_boundary("multipart/form-data")


def go_style(parts, boundary="0123456789abcdef", preamble=b""):
    """A body as Go's mime/multipart writer (lxc) makes it."""
    out = preamble
    for index, (name, filename, data) in enumerate(parts):
        out += (b"" if index == 0 else b"\r\n") + (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data
    return out + f"\r\n--{boundary}--\r\n".encode()


def read_all(body, boundary, chunk_size=upload.CHUNK_SIZE):
    reader = upload.MultipartReader(io.BytesIO(body), boundary, chunk_size=chunk_size)
    parts = []
    while True:
        part = reader.next_part()
        if part is None:
            return parts
        chunks = []
        reader.copy_part(chunks.append)
        parts.append((part.name, part.filename, b"".join(chunks)))


class MultipartReaderTests(SynchronousTestCase):
    """Parts come out whole whatever the chunking; broken bodies are refused."""

    def test_go_body(self):
        """lxc's split upload: metadata then rootfs, file names kept."""
        parts = [("metadata", "meta.tar.xz", b"META"), ("rootfs", "rootfs.squashfs", b"ROOT\r\n--0123")]
        self.assertEqual(read_all(go_style(parts), "0123456789abcdef"), parts)

    def test_pylxd_body(self):
        """pylxd's body (requests-toolbelt's encoder) reads the same."""
        encoder = MultipartEncoder({"metadata": ("metadata", b"M" * 1000, "application/octet-stream"),
                                    "rootfs": ("rootfs", b"R" * 3000, "application/octet-stream")})
        boundary = upload.multipart_boundary(encoder.content_type)
        parts = read_all(encoder.to_string(), boundary, chunk_size=7)
        self.assertEqual(parts, [("metadata", "metadata", b"M" * 1000), ("rootfs", "rootfs", b"R" * 3000)])

    def test_preamble_and_empty_part(self):
        """A preamble is skipped; an empty part is empty."""
        parts = [("metadata", "m", b""), ("rootfs", "r", b"x")]
        self.assertEqual(read_all(go_style(parts, preamble=b"ignored\r\n"), "0123456789abcdef"), parts)

    @given(st.lists(st.binary(max_size=300), min_size=1, max_size=3), st.integers(1, 64))
    def test_any_chunking(self, contents, chunk_size):
        """Any data (even with CRLF and dashes) survives any chunk size."""
        parts = [(f"p{i}", f"f{i}", data + b"\r\n--0123456789abcde") for i, data in enumerate(contents)]
        self.assertEqual(read_all(go_style(parts), "0123456789abcdef", chunk_size), parts)

    def test_skipping_a_part(self):
        """`next_part` without `copy_part` skips the current part."""
        reader = upload.MultipartReader(io.BytesIO(go_style([("a", "a", b"1"), ("b", "b", b"2")])),
                                        "0123456789abcdef")
        self.assertEqual(reader.next_part().name, "a")
        self.assertEqual(reader.next_part().name, "b")
        self.assertIsNone(reader.next_part())

    def test_broken_bodies(self):
        """No closing boundary, no boundary at all, bad part headers: errors, not hangs."""
        good = go_style([("metadata", "m", b"data")])
        cases = {
            good[:-len("--0123456789abcdef--\r\n") - 2]: "closing boundary",
            b"just bytes": "closing boundary",
            good.replace(b"Content-Disposition: form-data", b"Content-Disposition: attachment"): "form-data",
            good.replace(b"Content-Type: application/octet-stream", b"Garbage"): "malformed part header",
        }
        for body, message in cases.items():
            with self.assertRaises(ImageFormatError) as cm:
                read_all(body, "0123456789abcdef")
            self.assertIn(message, str(cm.exception))


class ExportLayoutTests(SynchronousTestCase):
    """The multipart body of a split export: the declared length is the real one."""

    def test_roundtrip(self):
        """Rendering the layout and reading it back gives the parts with their file names."""
        files = {"m": b"metadata bytes", "r": b"rootfs\r\nbytes"}
        parts = [export.FilePart("metadata", "meta-fp.tar.xz", "m", len(files["m"])),
                 export.FilePart("rootfs", "fp.squashfs", "r", len(files["r"]))]
        content_type, length, pieces = export.multipart_layout(parts, boundary="b0undary")
        self.assertEqual(content_type, "multipart/form-data; boundary=b0undary")
        body = b"".join(p if isinstance(p, bytes) else files[p.path] for p in pieces)
        self.assertEqual(len(body), length)
        self.assertEqual(read_all(body, upload.multipart_boundary(content_type)),
                         [("metadata", "meta-fp.tar.xz", files["m"]), ("rootfs", "fp.squashfs", files["r"])])

    def test_random_boundary(self):
        """Without a boundary given, a fresh random one is used."""
        first = export.multipart_layout([])[0]
        self.assertNotEqual(first, export.multipart_layout([])[0])
