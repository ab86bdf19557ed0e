# -*- test-case-name: tests.integration.test_migration_live -*-
"""Live migration with CRIU: what the source checks before it offers a live transfer.

A live migration is refused at once, naming the cause, unless the server's CRIU passes
its check and the container can be checkpointed (`lxdtx.instance.checkpoint`).
"""

from lxdtx import errors

PREFIX = "Unable to perform container live migration. "


async def preflight(instances, name):
    """Raise naming why the running container `name` can't migrate live, else return."""
    reason = await instances.checkpoint_problem(name, instances.get(name).value)
    if reason is not None:
        if reason.startswith("CRIU isn't installed on the server"):
            reason = reason.replace("on the server", "on the source server", 1)
        raise errors.InternalError(PREFIX + reason)
