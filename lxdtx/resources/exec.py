# -*- test-case-name: tests.integration.test_exec -*-
"""`POST /1.0/containers/<name>/exec`: a command in a running container."""

import os

from twisted.logger import Logger

from lxdtx import errors
from lxdtx.bodies import BOOLEAN, INTEGER, MAP_OF_STRINGS, STRINGS
from lxdtx.exec import attach
from lxdtx.exec.recording import record_names, run_detached
from lxdtx.exec.session import ExecSession
from lxdtx.exec.streams import SessionSocket, spawn_command
from lxdtx.operations import WEBSOCKET, container_resources
from lxdtx.resources.common import container_endpoint
from lxdtx.response import AsyncResponse
from lxdtx.router import Action

log = Logger()
# An exec waits this long for the container's file agent before going without.
PROBE_TIMEOUT = 10.0


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


async def _probe(instances, name, value, pty):
    """(has /snap, (master, slave) of a pty of the container's devpts or None) for an exec,
    asked of the container's file agent: paths inside a container can be slow to resolve
    (its own FUSE mounts), and its devpts is only safely opened from inside it. Any
    failure means no snap PATH rule and lxc-attach's own pty, as LXD would fall back."""
    init = instances.runtime.init(name)
    if init is None:
        return False, None
    idmap = value["config"].get("volatile.last_state.idmap", "")
    try:
        agent = await instances.file_agents.for_running(name, *init, idmap)
        call = agent.request({"op": "probe", "pty": pty})
        try:
            answer, fds = await call.next(timeout=PROBE_TIMEOUT)
        finally:
            call.end()
    except errors.ApiError as e:
        log.info("Exec through lxc-attach: {reason}", reason=e)
        return False, None
    if "pty_error" in answer or len(fds) != 2:
        for fd in fds:
            os.close(fd)
        if pty:
            log.info("Exec through lxc-attach: {reason}", reason=answer.get("pty_error"))
        return answer["has_snap"], None
    return answer["has_snap"], tuple(fds)


async def post_exec(req):
    instances = req.daemon.instances
    name = req.params["name"]
    doc = instances.records.get(name)
    body = req.json()
    command = _command(body)
    requested_env = _environment(body)
    interactive = _flag(body, "interactive")
    wait = _flag(body, "wait-for-websocket")
    record = _flag(body, "record-output")
    width, height = _size(body, "width"), _size(body, "height")
    pid = instances.runtime.init_pid(name)
    require_running(instances, name, pid)

    config, _ = instances.records.expanded(doc.value)
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
        has_snap, pty = await _probe(instances, name, doc.value, seed is not None)
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
        # Checked now, used up only by a handshake that succeeds.
        fd = session.check(secret)
        return SessionSocket(session, fd), lambda: session.claim(secret)

    op = operations.create("Executing command", cls=WEBSOCKET, resources=container_resources(name),
                           metadata=session.metadata(), run=run, connect=connect)
    op.start()
    return AsyncResponse(op)


ENDPOINTS = [
    container_endpoint("/1.0/containers/{name}/exec", post=Action(post_exec, answers="async", body={
        "type": "object", "properties": {
            "command": STRINGS, "environment": MAP_OF_STRINGS, "interactive": BOOLEAN, "wait-for-websocket": BOOLEAN,
            "record-output": BOOLEAN, "width": INTEGER, "height": INTEGER}})),
]
