# -*- test-case-name: tests.integration.test_files -*-
"""`/1.0/containers/<name>/files?path=`: read, list, write, symlink, mkdir, delete.

The work is done by the container's file agent (`lxdtx.instance.fileagents`):
inside the container with its root's credentials while it runs, over its
rootfs while it is stopped. This module parses headers, hands the agent the
request body's fd, and streams what the agent sends back through a pipe, so
no daemon thread ever waits on a container's file system.
"""

import json
import os

from lxdtx import errors
from lxdtx.instance import files
from lxdtx.instance.fileagents import OPEN_TIMEOUT
from lxdtx.resources.common import container_endpoint
from lxdtx.response import ProducerResponse, RawResponse, SyncResponse, empty
from lxdtx.router import Action
from lxdtx.streaming import read_pipe, send_pipe

MAX_UPLOAD = 1 << 40
# A directory listing larger than this is refused (a few million names).
MAX_LISTING = 64 * 1024 * 1024


async def _ask(req, message, fds=()):
    """Send one request to the agent; (call, first answer, its fds)."""
    agent = await req.daemon.instances.file_agent(req.params["name"])
    call = agent.request(message, fds)
    try:
        answer, answer_fds = await call.next(timeout=OPEN_TIMEOUT)
    except BaseException:
        call.end()
        raise
    return call, answer, answer_fds


def _path(req):
    path = req.query.get("path")
    if not path:
        raise errors.BadRequest("missing path argument")
    if "\0" in path:
        raise errors.BadRequest("Invalid path")
    return path


def _headers(answer):
    return {"X-LXD-uid": str(answer["uid"]), "X-LXD-gid": str(answer["gid"]),
            "X-LXD-mode": f"{answer['mode']:04o}", "X-LXD-type": answer["kind"]}


def _filename(path):
    return os.path.basename(path.rstrip("/"))


def _stream(call, fd, size, reactor):
    """A ProducerResponse writer sending the `size` bytes the agent puts into pipe `fd`."""

    async def write(request):
        try:
            sent = await send_pipe(request, fd, size, reactor)
        finally:
            call.end()
        if sent != size:
            # The file shrank while it was sent: the length promised cannot be kept.
            raise errors.InternalError("file changed while being read")

    return write


async def get_file(req):
    path = _path(req)
    reactor = req.daemon.reactor
    call, answer, fds = await _ask(req, {"op": "get", "path": path})
    headers = _headers(answer)
    if answer["kind"] == "symlink":
        call.end()
        return RawResponse(answer["target"].encode("utf-8", "surrogateescape"), headers=headers,
                           filename=_filename(path))
    if len(fds) != 1:
        call.end()
        raise errors.InternalError("the file agent sent no content")
    if answer["kind"] == "directory":
        try:
            if answer["size"] > MAX_LISTING:
                os.close(fds[0])
                raise errors.BadRequest(f"{path}: directory too large to list")
            names = json.loads(await read_pipe(fds[0], answer["size"], reactor))
        finally:
            call.end()
        return SyncResponse(names or None, headers=headers)
    headers.update({"Content-Length": str(answer["size"]), "Content-Type": "application/octet-stream",
                    "Content-Disposition": f"inline;filename={_filename(path)}"})
    return ProducerResponse(_stream(call, fds[0], answer["size"], reactor), headers=headers)


def _body_fd(req):
    """A file descriptor of the request body for the agent: the spool file, or a memfd
    holding a body small enough to have stayed in memory."""
    body = req.body
    try:
        return os.dup(body.fileno())
    except (AttributeError, OSError, ValueError):
        pass
    fd = os.memfd_create("lxdtx-body", os.MFD_CLOEXEC)
    try:
        view = memoryview(body.getbuffer())
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        raise
    return fd


async def post_file(req):
    path = _path(req)
    uid = files.parse_id(req.header("X-LXD-uid"), "X-LXD-uid")
    gid = files.parse_id(req.header("X-LXD-gid"), "X-LXD-gid")
    mode = files.parse_mode(req.header("X-LXD-mode"))
    kind = req.header("X-LXD-type") or "file"
    if kind not in files.TYPES:
        raise errors.BadRequest(f"Bad file type: {kind}")
    write = req.header("X-LXD-write") or "overwrite"
    if write not in files.WRITE_MODES:
        raise errors.BadRequest(f"Bad file write mode: {write}")
    message = {"path": path, "uid": uid, "gid": gid}
    if kind == "directory":
        await _done(req, {**message, "op": "mkdir", "mode": mode})
    elif kind == "symlink":
        target = req.body.read(4097)
        if len(target) > 4096:
            raise errors.BadRequest("Symlink target too long")
        if not target or b"\0" in target:
            raise errors.BadRequest("Invalid symlink target")
        await _done(req, {**message, "op": "symlink", "target": target.decode("utf-8", "surrogateescape")})
    else:
        body = _body_fd(req)
        try:
            call, _, _ = await _ask(req, {**message, "op": "write", "mode": mode, "append": write == "append"},
                                    [body])
        finally:
            os.close(body)
        try:
            await call.next()  # the copy: as long as the body takes
        finally:
            call.end()
    return empty()


async def _done(req, message):
    call, _, _ = await _ask(req, message)
    call.end()


async def delete_file(req):
    await _done(req, {"op": "delete", "path": _path(req)})
    return empty()


ENDPOINTS = [
    container_endpoint("/1.0/containers/{name}/files", get=Action(get_file, cancel_on_disconnect=True),
                       post=Action(post_file, max_body=MAX_UPLOAD), delete=delete_file),
]
