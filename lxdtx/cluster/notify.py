# -*- test-case-name: tests.integration.test_cluster_members -*-
"""Changes one member makes that other members must carry out on their own hosts.

A profile update is checked against every user here (the state is shared), but only the
member a running container lives on can apply it to that container: before the new
profile is committed, each member holding users of the profile is asked
(`POST /internal/cluster/profile-changing`) to apply it to its own, as this member does
to its own (`ConfigUpdates.profile_changing`). A member that fails or can't be reached fails
the update, naming it; nothing is committed then.
"""

import json

from lxdtx import errors
from lxdtx.cluster.peers import MemberUnreachable
from lxdtx.instance import model

PROFILE_CHANGING = "/internal/cluster/profile-changing"


async def profile_changing(daemon, profile, old, new):
    cluster = daemon.cluster
    if not cluster.enabled:
        return
    holders = set()
    for doc in daemon.store.list(model.KIND):
        if profile in doc.value.get("profiles", []) and not model.is_local(daemon, doc.value):
            holders.add(doc.value.get("location", ""))
    body = json.dumps({"profile": profile, "value": new, "revision": daemon.store.revision}).encode()
    for member_id in sorted(holders):
        member = cluster.member_by_id(member_id)
        if member is None:
            continue
        if not cluster.online(member):
            raise MemberUnreachable(member.name, "offline")
        code, _headers, content = await cluster.peers.call(member, "POST", PROFILE_CHANGING, body,
                                                           {"content-type": "application/json"})
        if code != 200:
            try:
                reason = json.loads(content).get("error") or f"status {code}"
            except (ValueError, AttributeError):
                reason = f"status {code}"
            raise errors.BadRequest(f"Cluster member '{member.name}' could not apply profile '{profile}': "
                                    f"{reason}")


async def apply_profile(daemon, profile, value):
    """On a member asked by another: apply the coming `value` of `profile` to our users."""
    old = daemon.profiles.get(profile).value
    await daemon.instances.updates.profile_changing(profile, old, value)
