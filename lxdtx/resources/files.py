# -*- test-case-name: tests.integration.test_files -*-
"""`/1.0/containers/<name>/files?path=`: read, list, write, symlink, mkdir, delete.

Path resolution and id shifting live in `lxdtx.instance.files`; this module
parses headers, runs the blocking work in threads and streams downloads from
an open fd without holding a file in memory.
"""

import os

from twisted.internet import threads

from lxdtx import errors
from lxdtx.instance import files
from lxdtx.instance.idmap import IdMap
from lxdtx.resources.common import container_endpoint
from lxdtx.response import ProducerResponse, SyncResponse, empty
from lxdtx.router import Action
from lxdtx.streaming import send_fd

MAX_UPLOAD = 1 << 40


async def _container_files(req):
    """ContainerFiles for the container of the request (its live root or its rootfs)."""
    instances = req.daemon.instances
    name = req.params["name"]
    doc = instances.get(name)
    value = doc.value
    try:
        idmap = IdMap.from_json(value["config"].get("volatile.last_state.idmap", ""))
    except ValueError as e:
        raise errors.InternalError(str(e))
    pid = instances.runtime.init_pid(name)
    if pid is not None:
        return files.ContainerFiles(f"/proc/{pid}/root", idmap)
    driver = req.daemon.pools.driver(value["pool"])
    await driver.mount_volume("container", name)
    return files.ContainerFiles(os.path.join(instances.container_dir(value, name), "rootfs"), idmap)


def _path(req):
    path = req.query.get("path")
    if not path:
        raise errors.BadRequest("missing path argument")
    if "\0" in path:
        raise errors.BadRequest("Invalid path")
    return path


def _headers(entry):
    return {"X-LXD-uid": str(entry.uid), "X-LXD-gid": str(entry.gid),
            "X-LXD-mode": f"{entry.mode:04o}", "X-LXD-type": entry.kind}


def _stream_fd(fd, size):
    """A ProducerResponse writer sending `size` bytes of `fd`, then closing it."""

    async def write(request):
        try:
            await send_fd(request, fd, size)
        finally:
            os.close(fd)

    return write


async def get_file(req):
    path = _path(req)
    container = await _container_files(req)
    entry = await threads.deferToThread(container.get, path)
    headers = _headers(entry)
    if entry.kind == "directory":
        return SyncResponse(entry.names or None, headers=headers)
    if entry.kind == "symlink":
        body = entry.target.encode("utf-8", "surrogateescape")
        headers.update({"Content-Length": str(len(body)), "Content-Type": "application/octet-stream",
                        "Content-Disposition": f"inline;filename={os.path.basename(path.rstrip('/'))}"})
        fd_read, fd_write = os.pipe()
        os.write(fd_write, body)
        os.close(fd_write)
        return ProducerResponse(_stream_fd(fd_read, len(body)), headers=headers)
    headers.update({"Content-Length": str(entry.size), "Content-Type": "application/octet-stream",
                    "Content-Disposition": f"inline;filename={os.path.basename(path.rstrip('/'))}"})
    return ProducerResponse(_stream_fd(entry.fd, entry.size), headers=headers)


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
    container = await _container_files(req)
    if kind == "directory":
        await threads.deferToThread(container.make_directory, path, uid=uid, gid=gid, mode=mode)
    elif kind == "symlink":
        target = req.body.read(4097)
        if len(target) > 4096:
            raise errors.BadRequest("Symlink target too long")
        await threads.deferToThread(container.make_symlink, path,
                                    target.decode("utf-8", "surrogateescape"), uid=uid, gid=gid)
    else:
        await threads.deferToThread(container.write_file, path, req.body, uid=uid, gid=gid, mode=mode,
                                    append=write == "append")
    return empty()


async def delete_file(req):
    path = _path(req)
    container = await _container_files(req)
    await threads.deferToThread(container.delete, path)
    return empty()


ENDPOINTS = [
    container_endpoint("/1.0/containers/{name}/files", get=get_file,
                       post=Action(post_file, max_body=MAX_UPLOAD), delete=delete_file),
]
