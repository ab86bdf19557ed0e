# -*- test-case-name: tests.unit.test_streaming -*-
"""Sending files as response bodies without blocking the reactor.

Every read of a file happens in a thread; a pipe (from a helper process) is
read by the reactor itself. The transport's back-pressure pauses either
between chunks, so a slow client never makes the daemon hold more than one
chunk in memory.
"""

import os
import re

from twisted.internet import defer, threads
from twisted.internet.interfaces import IPushProducer, IReadDescriptor
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


@implementer(IReadDescriptor, IPushProducer)
class PipeReader:
    """Reads up to `length` bytes of the non-blocking pipe `fd` into `sink(bytes)`, in the
    reactor; `done` fires with the number of bytes read once the pipe ends, `length` is
    reached or the consumer stops it. The fd is closed then."""

    def __init__(self, reactor, fd, length, sink):
        self.reactor = reactor
        self.fd = fd
        self.remaining = length
        self.sink = sink
        self.read = 0
        self.done = defer.Deferred()
        self._paused = False
        os.set_blocking(fd, False)

    def start(self):
        if self.remaining <= 0:
            self._end()
        elif not self._paused:
            self.reactor.addReader(self)

    def fileno(self):
        return self.fd

    def logPrefix(self):
        return "pipe"

    def doRead(self):
        try:
            data = os.read(self.fd, min(READ_CHUNK, self.remaining))
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.remaining -= len(data)
            self.read += len(data)
            self.sink(data)
        if not data or self.remaining <= 0:
            self._end()

    def connectionLost(self, reason):
        self._end()

    def pauseProducing(self):
        self._paused = True
        if self.fd >= 0:
            self.reactor.removeReader(self)

    def resumeProducing(self):
        self._paused = False
        if self.fd >= 0:
            self.reactor.addReader(self)

    def stopProducing(self):
        self._end()

    def _end(self):
        if self.fd < 0:
            return
        self.reactor.removeReader(self)
        os.close(self.fd)
        self.fd = -1
        self.done.callback(self.read)


async def send_pipe(request, fd, length, reactor):
    """Write `length` bytes read from pipe `fd` to `request`; the number sent."""
    reader = PipeReader(reactor, fd, length, request.write)
    request.registerProducer(reader, True)
    reader.start()
    try:
        return await reader.done
    finally:
        if not request.finished and not getattr(request, "_disconnected", False):
            request.unregisterProducer()


async def read_pipe(fd, length, reactor):
    """Up to `length` bytes read from pipe `fd`."""
    chunks = []
    reader = PipeReader(reactor, fd, length, chunks.append)
    reader.start()
    await reader.done
    return b"".join(chunks)


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
