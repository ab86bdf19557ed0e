# -*- test-case-name: tests.integration.test_exec -*-
"""`POST /1.0/containers/<name>/exec`: a command in a running container."""

import os

from twisted.internet import threads
from twisted.logger import Logger

from lxdtx import errors
from lxdtx.exec import attach, terminal
from lxdtx.exec.recording import record_names, run_detached
from lxdtx.exec.session import ExecSession
from lxdtx.exec.streams import SessionSocket, spawn_command
from lxdtx.fsutil import Root
from lxdtx.instance.idmap import IdMap
from lxdtx.operations import WEBSOCKET, container_resources
from lxdtx.resources.common import container_endpoint
from lxdtx.response import AsyncResponse
from lxdtx.wsproto import Handshake

log = Logger()


def _flag(body, key):
    value = body.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise errors.BadRequest(f"Invalid value for \"{key}\": must be a boolean")
    return value


def _size(body, key):
    value = body.get(key) or 0
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise errors.BadRequest(f"Invalid value for \"{key}\": must be a non-negative integer")
    return value


def _command(body):
    command = body.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
        raise errors.BadRequest("Invalid value for \"command\": must be a non-empty list of strings")
    if any("\0" in a for a in command):
        raise errors.BadRequest("Invalid value for \"command\": NUL byte in argument")
    return command


def _environment(body):
    env = body.get("environment")
    if env is None:
        return {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise errors.BadRequest("Invalid value for \"environment\": must be a map of strings")
    for key, value in env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise errors.BadRequest(f"Invalid environment variable name: {key!r}")
    return env


def require_running(instances, name, pid=0):
    """400 unless the container runs and is not frozen (the exec and console precondition).

    `pid`: the init pid when the caller just read it."""
    status = instances.runtime.status(name, pid)
    if status == "Frozen":
        raise errors.BadRequest("Container is frozen.")
    if status != "Running":
        raise errors.BadRequest("Container is not running.")


def _probe(pid, pty_owner):
    """Whether the container has /snap, and a pty of its devpts when `pty_owner` is given
    (else, or when it cannot be had, why not). Paths inside a container can be slow to
    resolve (its own FUSE mounts): this runs in a thread."""
    has_snap = False
    try:
        with Root(f"/proc/{pid}/root") as root:
            os.close(root.open("/snap", os.O_PATH | os.O_DIRECTORY))
        has_snap = True
    except OSError:
        pass
    if pty_owner is None:
        return has_snap, None
    try:
        return has_snap, terminal.open_pty(pid, *pty_owner)
    except OSError as e:
        return has_snap, e


def _pty_owner(value):
    """Host uid and gid for the container's ptys (None: no pty of ours, lxc-attach makes one)."""
    try:
        return terminal.owner(IdMap.from_json(value["config"].get("volatile.last_state.idmap", "")))
    except (OSError, ValueError):
        return None


async def post_exec(req):
    instances = req.daemon.instances
    name = req.params["name"]
    doc = instances.get(name)
    body = req.json()
    command = _command(body)
    requested_env = _environment(body)
    interactive = _flag(body, "interactive")
    wait = _flag(body, "wait-for-websocket")
    record = _flag(body, "record-output")
    width, height = _size(body, "width"), _size(body, "height")
    pid = instances.runtime.init_pid(name)
    require_running(instances, name, pid)

    config, _ = instances.expanded(doc.value)
    seed = None
    if config.get("limits.processes"):
        # The seed and its zygote would take two of the processes the container is allowed.
        instances.seeds.forget(name)
    else:
        seed = await instances.seeds.get(name, instances.payload_cgroup_dirs)
    pty = None
    if seed is not None and not (interactive and wait):
        # The seed applies LXD's PATH rule itself, in the container: no thread needed to look
        # for /snap. (Should it refuse the command after all, lxc-attach gets liblxc's default.)
        has_snap = None
    else:
        # With a seed, only a pty session comes here: it needs a pty of the container.
        owner = _pty_owner(doc.value) if seed is not None else None
        has_snap, pty = await threads.deferToThread(_probe, pid, owner)
    if isinstance(pty, OSError):
        log.info("Exec through lxc-attach: {reason}", reason=pty)
        pty = None
    env = attach.environment(config, requested_env, interactive, has_snap)
    argv = attach.argv(name, instances.lxcpath, command, env, attach.working_directory(env["HOME"]))
    reactor = req.daemon.reactor
    operations = req.daemon.operations

    if not wait:
        log_dir = instances.log_dir(name)

        async def run_task(op):
            paths = {}
            if record:
                paths = {fd: os.path.join(log_dir, f) for fd, f in record_names(op.id).items()}
            code = await run_detached(reactor, argv, paths.get("1"), paths.get("2"),
                                      seed=seed, command=command, env=env, cwd=env["HOME"])
            metadata = {"return": code}
            if record:
                metadata["output"] = {fd: f"/1.0/containers/{name}/logs/{f}"
                                      for fd, f in record_names(op.id).items()}
            return metadata

        return AsyncResponse(operations.start("Executing command", resources=container_resources(name), run=run_task))

    def spawn(session):
        nonlocal pty
        taken, pty = pty, None
        return spawn_command(session, reactor, seed, argv, command, env, env["HOME"], taken)

    def release_pty(result):
        """A session that never started its command leaves its pty unused."""
        if pty is not None:
            for fd in pty:
                os.close(fd)
        return result

    session = ExecSession(reactor, spawn, interactive=interactive, width=width, height=height)
    session.done.addBoth(release_pty)

    async def run(op):
        code = await session.done
        return {"return": code}

    async def connect(op, request, secret):
        fd = session.claim(secret)
        return Handshake(SessionSocket(session, fd))

    op = operations.create("Executing command", cls=WEBSOCKET, resources=container_resources(name),
                           metadata=session.metadata(), run=run, connect=connect)
    op.start()
    return AsyncResponse(op)


ENDPOINTS = [
    container_endpoint("/1.0/containers/{name}/exec", post=post_exec),
]
