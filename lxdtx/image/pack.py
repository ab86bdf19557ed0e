# -*- test-case-name: tests.integration.test_image_pack -*-
"""Pack a directory (`metadata.yaml`, `templates/`, `rootfs/`) into a unified image tarball.

`tar` writes into a pipe, an external compressor found in $PATH reads it and
writes the file: both are spawned by the reactor and the bytes never pass
through the daemon.
"""

import os
import shutil

from twisted.internet import defer, protocol, task
from twisted.internet.error import ProcessDone

from lxdtx.asyncutil import ProcessError

# Arguments each known compressor needs to write to stdout (gzip -n: no name or
# time stamp in the header, so the same input packs to the same fingerprint).
_COMPRESSOR_ARGS = {
    "gzip": ["-c", "-n"],
    "pigz": ["-c", "-n"],
    "bzip2": ["-c"],
    "lzma": ["-c"],
    "xz": ["-c", "-T1"],
    "zstd": ["-c", "-q"],
}


def compressor_argv(name):
    """argv of a compressor writing stdin to stdout compressed; ValueError if not in $PATH."""
    if not name or "/" in name or shutil.which(name) is None:
        raise ValueError(f"compression algorithm {name!r} not found in $PATH")
    return [name, *_COMPRESSOR_ARGS.get(name, ["-c"])]


def tar_create_argv(metadata_dir, directory, *, include_templates, privileged):
    """tar writing the image layout to stdout: metadata.yaml, templates/, rootfs/."""
    argv = ["tar", "--numeric-owner"]
    if privileged:
        argv += ["--xattrs", "--xattrs-include=*", "--acls"]
    argv += ["-cf", "-", "-C", metadata_dir, "metadata.yaml", "-C", directory]
    if include_templates:
        argv.append("templates")
    argv.append("rootfs")
    return argv


class _Exited(protocol.ProcessProtocol):
    """Collects stderr (bounded) and fires `done` with (code, stderr)."""

    _LIMIT = 64 * 1024

    def __init__(self):
        self.done = defer.Deferred()
        self._err = bytearray()

    def childDataReceived(self, fd, data):
        if fd == 2 and len(self._err) < self._LIMIT:
            self._err += data

    def processEnded(self, reason):
        code = 0 if reason.check(ProcessDone) else getattr(reason.value, "exitCode", None)
        if code is None:
            code = 128 + (getattr(reason.value, "signal", None) or 0)
        self.done.callback((code, bytes(self._err)))


def _spawn(reactor, argv, child_fds):
    proto = _Exited()
    reactor.spawnProcess(proto, argv[0], argv, env=os.environ.copy(), childFDs=child_fds)
    return proto.done


async def _checked(done, argv):
    code, err = await done
    if code != 0:
        raise ProcessError(argv, code, b"", err)


async def pack(reactor, metadata_dir, directory, dest, compression, *, include_templates,
               privileged, progress=None):
    """Write the image tarball to `dest` compressed with `compression` (`none`: plain tar).

    `progress(bytes_written)` is called about once a second while packing.
    """
    tar_argv = tar_create_argv(metadata_dir, directory, include_templates=include_templates,
                               privileged=privileged)
    await tar_to_file(reactor, tar_argv, dest, compression, progress=progress)


async def tar_to_file(reactor, tar_argv, dest, compression, *, progress=None):
    """Run `tar_argv` (writing an archive to stdout) through `compression` into `dest`."""
    comp_argv = None if compression == "none" else compressor_argv(compression)
    devnull = os.open(os.devnull, os.O_RDONLY)
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    waits = []
    try:
        if comp_argv is None:
            waits.append(_checked(_spawn(reactor, tar_argv, {0: devnull, 1: out, 2: "r"}), tar_argv))
        else:
            read_end, write_end = os.pipe()
            try:
                waits.append(_checked(_spawn(reactor, tar_argv, {0: devnull, 1: write_end, 2: "r"}), tar_argv))
                waits.append(_checked(_spawn(reactor, comp_argv, {0: read_end, 1: out, 2: "r"}), comp_argv))
            finally:
                # Only the children may hold the pipe, or the compressor never sees its end.
                os.close(read_end)
                os.close(write_end)
    finally:
        os.close(devnull)
        os.close(out)
    ticker = None
    if progress is not None:
        ticker = task.LoopingCall(lambda: progress(_size(dest)))
        ticker.clock = reactor
        ticker.start(1.0, now=False)
    try:
        results = await defer.DeferredList(
            [defer.Deferred.fromCoroutine(w) for w in waits], consumeErrors=True)
    finally:
        if ticker is not None:
            ticker.stop()
    # A failing compressor makes tar fail too (broken pipe): its own error says more.
    for ok, value in reversed(results):
        if not ok:
            value.raiseException()


def _size(path):
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
