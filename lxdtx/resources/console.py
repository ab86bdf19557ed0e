# -*- test-case-name: tests.integration.test_console -*-
"""`/1.0/containers/<name>/console`: attach (websocket), read and clear the console log."""

import os
import re

from twisted.internet import threads

from lxdtx import errors
from lxdtx.bodies import INTEGER, fields, one_of_strings
from lxdtx.exec import console
from lxdtx.exec.streams import SessionSocket
from lxdtx.operations import WEBSOCKET, container_resources
from lxdtx.resources.common import container_endpoint
from lxdtx.resources.exec import require_running
from lxdtx.response import AsyncResponse, FileResponse, RawResponse, empty
from lxdtx.router import Action


def _size(body, key):
    value = body.get(key) or 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise errors.BadRequest(f"Invalid value for \"{key}\": must be a non-negative integer")
    return value


# Attaching replays the end of the console log, so a user sees where the console is
# (the boot banner of a fresh container, the last prompt's history).
REPLAY = 16 * 1024
# Terminal status queries (DSR) in old output would make the client's terminal answer
# into the console as if typed.
_QUERIES = re.compile(rb"\x1b\[[0-9;?]*n")


def replay_of(path, limit=REPLAY):
    """The last complete lines of the console log, without terminal queries (blocking)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read(limit)
    except OSError:
        return b""
    end = data.rfind(b"\n")
    if end < 0:
        return b""
    data = data[:end + 1]
    if size > limit:
        data = data[data.find(b"\n") + 1:]
    return _QUERIES.sub(b"", data)


def _log_path(instances, name):
    # liblxc appends the console's output to this file (lxc.console.logfile).
    return os.path.join(instances.log_dir(name), "console.log")


async def post_console(req):
    instances = req.daemon.instances
    name = req.params["name"]
    instances.records.get(name)
    body = req.json()
    width, height = _size(body, "width"), _size(body, "height")
    kind = body.get("type") or "console"
    if kind != "console":
        raise errors.BadRequest(f"Unknown console type {kind!r}")
    require_running(instances, name)
    reactor = req.daemon.reactor
    line = console.argv(name, instances.lxcpath)
    replay = await threads.deferToThread(replay_of, _log_path(instances, name))

    def spawn(session):
        helper = console.ConsoleHelper(session, reactor, True).spawn(line, size=session.size)
        if replay:
            session.command_output(1, replay)
        return helper

    session = console.ConsoleSession(reactor, spawn, width=width, height=height)

    async def run(op):
        await session.done
        return {}

    async def connect(op, request, secret):
        # Checked now, used up only by a handshake that succeeds.
        name = session.check(secret)
        return SessionSocket(session, name), lambda: session.claim(secret)

    op = req.daemon.operations.create("Showing console", cls=WEBSOCKET, resources=container_resources(name),
                                      metadata=session.metadata(), run=run, connect=connect)
    op.start()
    return AsyncResponse(op)


async def get_console_log(req):
    instances = req.daemon.instances
    name = req.params["name"]
    instances.records.get(name)
    path = _log_path(instances, name)
    if not os.path.isfile(path):
        return RawResponse(b"")
    return FileResponse(path)


def _truncate(path):
    try:
        os.truncate(path, 0)
    except FileNotFoundError:
        pass


async def delete_console_log(req):
    instances = req.daemon.instances
    name = req.params["name"]
    instances.records.get(name)
    await threads.deferToThread(_truncate, _log_path(instances, name))
    return empty()


ENDPOINTS = [
    container_endpoint("/1.0/containers/{name}/console", get=Action(get_console_log, answers="raw"),
                       post=Action(post_console, body=fields(width=INTEGER, height=INTEGER, type=one_of_strings(
                           "console", "vga"))),
                       delete=delete_console_log),
]
