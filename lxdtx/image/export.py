# -*- test-case-name: tests.unit.test_image_upload -*-
"""The body of `GET /1.0/images/<fp>/export` for a split image: multipart, length known ahead.

`lxc image export` reads part `metadata` then part `rootfs` and names the files it
writes after the parts' file names.
"""

import dataclasses
import secrets


@dataclasses.dataclass
class FilePart:
    """A file to send as one form-data part."""

    name: str
    filename: str
    path: str
    size: int


def _part_head(boundary, part, first):
    lead = b"" if first else b"\r\n"
    return lead + (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{part.name}"; filename="{part.filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


def multipart_layout(parts, boundary=None):
    """(content type, total length, pieces): pieces are bytes or FileParts, in order."""
    boundary = boundary or secrets.token_hex(30)
    pieces = []
    for index, part in enumerate(parts):
        pieces.append(_part_head(boundary, part, index == 0))
        pieces.append(part)
    pieces.append(f"\r\n--{boundary}--\r\n".encode())
    length = sum(len(p) if isinstance(p, bytes) else p.size for p in pieces)
    return f"multipart/form-data; boundary={boundary}", length, pieces
