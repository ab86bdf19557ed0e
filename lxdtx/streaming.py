# -*- test-case-name: tests.unit.test_streaming -*-
"""Sending files as response bodies without blocking the reactor.

Every read happens in a thread; the transport's back-pressure pauses the loop
between chunks, so a slow client never makes the daemon hold more than one
chunk of a file in memory.
"""

import os
import re

from twisted.internet import defer, threads
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from lxdtx.response import ErrorResponse

READ_CHUNK = 1024 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@implementer(IPushProducer)
class _Pacer:
    """Tracks whether the request's transport wants us to pause."""

    def __init__(self):
        self._resumed = None
        self.stopped = False

    def pauseProducing(self):
        if self._resumed is None:
            self._resumed = defer.Deferred()

    def resumeProducing(self):
        waiting, self._resumed = self._resumed, None
        if waiting is not None:
            waiting.callback(None)

    def stopProducing(self):
        self.stopped = True
        self.resumeProducing()

    def wait(self):
        return self._resumed


async def send_fd(request, fd, length, offset=None):
    """Write `length` bytes of `fd` to `request`, from `offset` (None: its current position)."""
    pacer = _Pacer()
    request.registerProducer(pacer, True)
    try:
        remaining = length
        while remaining > 0 and not pacer.stopped:
            size = min(READ_CHUNK, remaining)
            if offset is None:
                chunk = await threads.deferToThread(os.read, fd, size)
            else:
                chunk = await threads.deferToThread(os.pread, fd, size, offset)
                offset += len(chunk)
            if not chunk:
                break
            remaining -= len(chunk)
            request.write(chunk)
            waiting = pacer.wait()
            if waiting is not None:
                await waiting
    finally:
        if not request.finished and not getattr(request, "_disconnected", False):
            request.unregisterProducer()


def byte_range(header, size):
    """(start, end) to send for a Range header over `size` bytes: None for the whole file,
    ValueError when the range cannot be satisfied. One range only; others mean the whole file."""
    match = _RANGE.fullmatch((header or "").strip())
    if not match or not any(match.groups()):
        return None
    first, last = match.groups()
    if not first:  # the last N bytes
        start, end = max(0, size - int(last)), size
    else:
        start = int(first)
        end = min(size, int(last) + 1) if last else size
        if last and int(last) < start:
            return None  # not a valid range: ignored, as RFC 9110 says
    if start >= size or start >= end:
        raise ValueError(f"bytes */{size}")
    return start, end


def _open(path):
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        return fd, os.fstat(fd).st_size
    except BaseException:
        os.close(fd)
        raise


async def send_file(request, path):
    """Answer with the file at `path`: 200, 206 for one satisfiable Range, 416 for none."""
    try:
        fd, size = await threads.deferToThread(_open, path)
    except FileNotFoundError:
        request.write(ErrorResponse(404, "not found").render(request))
        return
    try:
        request.setHeader(b"accept-ranges", b"bytes")
        header = request.getHeader(b"range")
        try:
            wanted = byte_range(header.decode("latin-1") if header else None, size)
        except ValueError as e:
            request.setResponseCode(416)
            request.setHeader(b"content-range", str(e).encode())
            request.setHeader(b"content-length", b"0")
            return
        start, end = wanted or (0, size)
        if wanted:
            request.setResponseCode(206)
            request.setHeader(b"content-range", b"bytes %d-%d/%d" % (start, end - 1, size))
        request.setHeader(b"content-length", b"%d" % (end - start))
        if request.method != b"HEAD":
            await send_fd(request, fd, end - start, start)
    finally:
        os.close(fd)
