# -*- test-case-name: tests.unit.test_image_upload -*-
"""An image upload as `POST /1.0/images` receives it: body kind, headers, multipart parts.

A body that is not JSON is an upload. `multipart/form-data` carries a split image
(part `metadata`, then part `rootfs`); any other content type is a unified
tarball. The multipart reader streams: parts of any size pass through a small
buffer, so it runs in a thread over the spooled body.
"""

import dataclasses
import email.message
import hashlib
import os
from urllib.parse import parse_qsl

from lxdtx.image.invalid import ImageFormatError

_TRUE = ("1", "true", "yes", "on")
_MAX_HEADER_BLOCK = 64 * 1024
CHUNK_SIZE = 1024 * 1024


def is_public(value):
    """`X-LXD-public`: `1` (pylxd) and `true` (lxc) both mean public; also yes/on."""
    return value is not None and value.strip().lower() in _TRUE


def parse_properties(values):
    """`X-LXD-properties` headers (URL query encoded) as one map.

    Within one header the first value of a key counts; a later header overrides an earlier one.
    """
    result = {}
    for value in values or ():
        seen = {}
        for key, item in parse_qsl(value, keep_blank_values=True):
            seen.setdefault(key, item)
        result.update(seen)
    return result


def _header_params(name, value):
    message = email.message.Message()
    message[name] = value
    return message


def multipart_boundary(content_type):
    """The boundary of a `multipart/form-data` content type, or None for anything else."""
    if not content_type:
        return None
    message = _header_params("content-type", content_type)
    if message.get_content_type() != "multipart/form-data":
        return None
    boundary = message.get_param("boundary")
    if not boundary:
        raise ImageFormatError("Invalid multipart image: no boundary in Content-Type")
    return boundary


@dataclasses.dataclass
class Part:
    """One part's headers: its form name and file name."""

    name: str
    filename: str
    headers: dict


def _parse_part_headers(block):
    headers = {}
    for line in block.decode("utf-8", "replace").split("\r\n"):
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ImageFormatError(f"Invalid multipart image: malformed part header {line[:80]!r}")
        headers[key.strip().lower()] = value.strip()
    disposition = headers.get("content-disposition", "")
    message = _header_params("content-disposition", disposition)
    if message.get_content_disposition() != "form-data":
        raise ImageFormatError("Invalid multipart image: part without form-data Content-Disposition")
    name = message.get_param("name", header="content-disposition") or ""
    filename = message.get_filename() or ""
    return Part(name, filename, headers)


class MultipartReader:
    """Reads the parts of a multipart body from a file object, one after the other.

    `next_part()` returns the next Part (or None after the closing delimiter);
    `copy_part(write)` then passes that part's bytes to `write` and returns their count.
    """

    def __init__(self, src, boundary, chunk_size=CHUNK_SIZE):
        self._src = src
        self._chunk_size = chunk_size
        # Every delimiter is CRLF--boundary; the first one may open the body without
        # the CRLF, so pretend the body starts with one.
        self._delim = b"\r\n--" + boundary.encode("latin-1")
        self._buf = bytearray(b"\r\n")
        self._eof = False
        self._state = "preamble"  # -> "headers" -> "body" -> "headers" ... -> "end"

    def _fill(self):
        if self._eof:
            return False
        data = self._src.read(self._chunk_size)
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    def _need(self, n):
        while len(self._buf) < n:
            if not self._fill():
                raise ImageFormatError("Invalid multipart image: body ends too early")

    def _pass_through(self, write):
        """Move bytes up to the next delimiter to `write`; consume the delimiter."""
        total = 0
        keep = len(self._delim) - 1
        while True:
            at = self._buf.find(self._delim)
            if at >= 0:
                if at:
                    write(bytes(self._buf[:at]))
                    total += at
                del self._buf[:at + len(self._delim)]
                return total
            if len(self._buf) > keep:
                cut = len(self._buf) - keep
                write(bytes(self._buf[:cut]))
                total += cut
                del self._buf[:cut]
            if not self._fill():
                raise ImageFormatError("Invalid multipart image: body ends before the closing boundary")

    def next_part(self):
        if self._state == "preamble":
            self._pass_through(lambda data: None)
        elif self._state == "body":
            self.copy_part(lambda data: None)
        if self._state == "end":
            return None
        self._need(2)
        if self._buf[:2] == b"--":
            self._state = "end"
            return None
        # Transport padding may follow the boundary before its CRLF.
        while True:
            self._need(1)
            if self._buf[:1] not in (b" ", b"\t"):
                break
            del self._buf[:1]
        self._need(2)
        if self._buf[:2] != b"\r\n":
            raise ImageFormatError("Invalid multipart image: malformed boundary line")
        del self._buf[:2]
        # Header lines end with an empty line; with no headers at all the part
        # starts right after the boundary line's CRLF.
        self._need(2)
        if self._buf[:2] == b"\r\n":
            block, skip = b"", 2
        else:
            while True:
                end = self._buf.find(b"\r\n\r\n")
                if end >= 0:
                    block, skip = bytes(self._buf[:end]), end + 4
                    break
                if len(self._buf) > _MAX_HEADER_BLOCK or not self._fill():
                    raise ImageFormatError("Invalid multipart image: part headers do not end")
        del self._buf[:skip]
        self._state = "body"
        return _parse_part_headers(block)

    def copy_part(self, write):
        if self._state != "body":
            raise ImageFormatError("Invalid multipart image: no part to read")
        size = self._pass_through(write)
        self._state = "headers"
        return size


# -- spooled body -> image files (blocking: run in a thread) ---------------------

def hash_chunks(src, sha, dst=None):
    """Feed `src` to `sha` chunk by chunk (writing each to `dst` too, if given); the size read."""
    size = 0
    while True:
        chunk = src.read(CHUNK_SIZE)
        if not chunk:
            return size
        sha.update(chunk)
        if dst is not None:
            dst.write(chunk)
        size += len(chunk)


def _copy_hashing(src, dst_path, sha):
    with open(dst_path, "wb") as dst:
        return hash_chunks(src, sha, dst)


def receive(body, boundary, tmpdir):
    """Spooled body -> files in tmpdir; (sha256 hex, image path, rootfs path, size, rootfs filename)."""
    sha = hashlib.sha256()
    body.seek(0)
    image_path = os.path.join(tmpdir, "image")
    if boundary is None:
        size = _copy_hashing(body, image_path, sha)
        if size == 0:
            raise ImageFormatError("Invalid image: empty body")
        return sha.hexdigest(), image_path, None, size, ""
    rootfs_path = os.path.join(tmpdir, "rootfs")
    reader = MultipartReader(body, boundary)
    sizes = []
    rootfs_filename = ""
    for expected, path in (("metadata", image_path), ("rootfs", rootfs_path)):
        part = reader.next_part()
        if part is None or part.name != expected:
            found = "nothing" if part is None else repr(part.name)
            if part is not None and part.name == "rootfs.img":
                raise ImageFormatError("Invalid multipart image: virtual machine images are not supported")
            raise ImageFormatError(f"Invalid multipart image: expected part {expected!r}, found {found}")
        with open(path, "wb") as dst:
            def write(data, dst=dst):
                sha.update(data)
                dst.write(data)
            sizes.append(reader.copy_part(write))
        if expected == "rootfs":
            rootfs_filename = part.filename
    if reader.next_part() is not None:
        raise ImageFormatError("Invalid multipart image: more than two parts")
    if not all(sizes):
        raise ImageFormatError("Invalid multipart image: empty part")
    return sha.hexdigest(), image_path, rootfs_path, sum(sizes), rootfs_filename
