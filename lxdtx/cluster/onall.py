# -*- test-case-name: tests.integration.test_cluster_members -*-
"""Objects every cluster member makes on its own host (storage pools, networks): one
document in the shared store, defined member by member, then made on all at once.

The document keeps the config every member shares (`config`), each member's own keys
(`members`: member id -> config; only the kind's node-specific keys may be given there)
and a `status`: `Pending` while it is being defined, then `Created`, or `Errored` when a
member failed to make it.

Making (`make_on_all`): every member, this one too, makes its local object under an intent
of its own (recorded in the shared store, naming the member and the coordinating one) that
it leaves open; the one commit that marks the object `Created`, with every member's
filled-in keys, ends them all, if each is still at the revision its member answered with.
A member that fails or can't be reached has every other member undo theirs (`resolve`: the
intents' step drops an object whose row is not `Created`), and the object is left
`Errored`, naming the member. A member that can't be told undoes it at its next start,
when it resolves its open intents. A coordinator that dies before its commit: the others
undo theirs once its lease lapses (lxdtx.cluster.orphans), and it its own at its start.

A member that joins after an object was made makes its own from the shared config
(`catch_up`): under its intent, ended by the commit that adds its keys to the row.

Removal (`remove_on_all`): the row goes in one commit with one finishing intent per
member; each member is then asked to resolve its own (one that can't be reached does so
at its next start).
"""

import json
import time
import uuid

from lxdtx import errors, faults
from lxdtx.asyncutil import sleep
from lxdtx.cluster.peers import MemberUnreachable
from lxdtx.state import Delete, Put

INTENT = "intent"
PENDING, CREATED, ERRORED = "Pending", "Created", "Errored"
RESOLVE = "/internal/cluster/intents/{}/resolve"
# The coordinator, once another member has made its part (the others still to ask).
MADE_ONE = faults.point("cluster.make_on_all.made_one")


def clustered(daemon):
    cluster = getattr(daemon, "cluster", None)
    return cluster is not None and cluster.enabled


def status(value):
    return value.get("status", CREATED)


def made_here(daemon, value):
    """Whether this member has its own object of a document (a lone daemon: whether it exists)."""
    if status(value) != CREATED:
        return False
    return not clustered(daemon) or daemon.cluster.member_id in (value.get("members") or {})


def as_first_member(value, member_id, node_specific):
    """A lone daemon's document as the first member's of a new cluster: its node-specific
    keys become that member's own."""
    config = value.get("config") or {}
    own = {k: v for k, v in config.items() if k in node_specific}
    shared = {k: v for k, v in config.items() if k not in node_specific}
    return dict(value, config=shared, status=CREATED, members={member_id: own})


def local_config(daemon, value):
    """The config this member works with: the shared one and its own keys over it."""
    if not clustered(daemon):
        return value["config"]
    return member_config(value, daemon.cluster.member_id)


def member_config(value, member_id):
    return {**value["config"], **(value.get("members") or {}).get(member_id, {})}


def locations(daemon, value):
    return sorted(daemon.cluster.location_name(i) for i in (value.get("members") or {})) or ["none"]


def check_node_keys(config, allowed):
    for key in sorted(config):
        if key not in allowed:
            raise errors.BadRequest(f"Config key '{key}' may not be used as node-specific key")


def check_shared_keys(config, node_specific):
    for key in sorted(config):
        if key in node_specific:
            raise errors.BadRequest(f"Config key '{key}' is node-specific")


def pending_value(doc, member, config, what):
    """A pending document's value with `member`'s own keys added (400 if it has some)."""
    members = dict(doc.value.get("members") or {})
    if member.value["id"] in members:
        raise errors.BadRequest(f"The {what} already defined on node {member.name}")
    members[member.value["id"]] = dict(config)
    return dict(doc.value, members=members)


def begin_local(daemon, op, target, coordinator):
    """The intent under which this member makes its part for `coordinator` (a member id;
    None: this member)."""
    intent = daemon.journal.begin(op, target)
    intent.value["coordinator"] = coordinator or daemon.cluster.member_id
    if coordinator and coordinator != daemon.cluster.member_id:
        # The coordinator's heartbeat as it is now: if it restarts it has forgotten us.
        intent.value["coordinator_since"] = daemon.store_choice.liveness.incarnation(coordinator)
    return intent


def made_local(daemon, intent, config):
    """What a member answers once its part is made: its intent, at which revision, its keys."""
    doc = daemon.store.get(INTENT, intent.name)
    return {"intent": intent.name, "revision": doc.revision if doc else None, "config": config}


async def make_on_all(daemon, kind, name, value, revision, path, make_here):
    """Commit `value` (shared config set, still `Pending`), have every member make its
    local object (`make_here()` here, `POST path` on the others: each answers {"intent",
    "config"}), then commit `Created`, or undo all and leave it `Errored`."""
    cluster = daemon.cluster
    members = [cluster.get(n) for n in cluster.names()]
    for member in members:
        if not cluster.online(member):
            raise MemberUnreachable(member.name, "offline")
    await daemon.store.commit([Put(kind, name, dict(value, status=PENDING), expect=revision)])
    made = {}  # member id -> (member, intent name, its own keys)
    revisions = {}  # intent name -> the revision its member recorded it at
    try:
        for member in members:
            if member.value["id"] == cluster.member_id:
                answer = await make_here()
            else:
                answer = await call(daemon, member, path, {})
                MADE_ONE()
            made[member.value["id"]] = (member, answer["intent"], answer["config"])
            revisions[answer["intent"]] = answer.get("revision")
        # Every intent still as its member left it (none undone by a member that took us for
        # dead, lxdtx.cluster.orphans), the object Created and the intents ended at once.
        doc = daemon.store.get(kind, name)
        final = dict(doc.value, status=CREATED, members={mid: c for mid, (_m, _i, c) in made.items()})
        await daemon.store.commit([Put(kind, name, final, expect=doc.revision),
                                   *[Delete(INTENT, intent, expect=revisions.get(intent))
                                     for _m, intent, _c in made.values()]])
    except Exception as e:
        for member, intent, _config in made.values():
            await resolve_on(daemon, member, intent)
        doc = daemon.store.get(kind, name)
        if doc is not None:
            await daemon.store.commit([Put(kind, name, dict(doc.value, status=ERRORED), expect=doc.revision)])
        raise errors.to_api_error(e) from None


async def catch_up(daemon, kind, make_here):
    """A member that just joined: its own object of every `Created` one of `kind` that it
    has no keys in yet (`make_here(name)` answers {"intent", "config"}). One that fails is
    undone and logged; the others go on."""
    member_id = daemon.cluster.member_id
    for doc in daemon.store.list(kind):
        if status(doc.value) != CREATED or member_id in (doc.value.get("members") or {}):
            continue
        answer = None
        try:
            answer = await make_here(doc.name)
            now = daemon.store.get(kind, doc.name)
            members = dict((now.value.get("members") or {}) if now else {}, **{member_id: answer["config"]})
            await daemon.store.commit([Put(kind, doc.name, dict(now.value, members=members), expect=now.revision),
                                       Delete(INTENT, answer["intent"])])
        except Exception as e:
            if answer is not None:
                await resolve(daemon, answer["intent"])
            daemon.cluster.log.warn("Could not make {kind} {name} on this new member: {error}", kind=kind,
                                    name=doc.name, error=e)


async def apply_on_others(daemon, path, body, undo):
    """`POST path` with `body` on every other member (a change this member made live on its
    own object); if one fails, those done get `undo` and the error names the member."""
    cluster = daemon.cluster
    others = [cluster.get(n) for n in cluster.names()]
    others = [m for m in others if m.value["id"] != cluster.member_id]
    for member in others:
        if not cluster.online(member):
            raise MemberUnreachable(member.name, "offline")
    done = []
    try:
        for member in others:
            await call(daemon, member, path, body)
            done.append(member)
    except Exception:
        for member in done:
            try:
                await call(daemon, member, path, undo)
            except Exception as e:
                cluster.log.warn("Cluster member {member} could not undo a change: {error}",
                                 member=member.name, error=e)
        raise


async def remove_on_all(daemon, kind, doc, steps):
    """Delete the row with, per member, a finishing intent of `steps(member_id, config)`."""
    value = doc.value
    if status(value) != CREATED:
        await daemon.store.commit([Delete(kind, doc.name, expect=doc.revision)])
        return
    intents = {}  # member id -> (intent name, value)
    for member_id in value.get("members") or {}:
        intents[member_id] = (f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}", {
            "op": f"{kind}.delete", "target": doc.name, "finish": True, "member": member_id,
            "steps": steps(member_id, member_config(value, member_id))})
    await daemon.store.commit([Delete(kind, doc.name, expect=doc.revision),
                               *[Put(INTENT, n, v) for n, v in intents.values()]])
    for member_id, (intent_name, _value) in intents.items():
        member = daemon.cluster.member_by_id(member_id)
        if member is not None:
            await resolve_on(daemon, member, intent_name)


async def resolve_on(daemon, member, intent):
    try:
        if member.value["id"] == daemon.cluster.member_id:
            await resolve(daemon, intent)
        else:
            await call(daemon, member, RESOLVE.format(intent), {})
    except Exception as e:  # it resolves its intent at its next start
        daemon.cluster.log.warn("Cluster member {member} could not resolve {intent} now: {error}",
                                member=member.name, intent=intent, error=e)


async def resolve(daemon, intent_name):
    """Resolve one of this member's open intents now (undo it, or finish it)."""
    doc = daemon.store.get(INTENT, intent_name)
    if doc is None:
        return
    if doc.value.get("member", "") != daemon.journal.member():
        raise errors.BadRequest(f"Intent {intent_name} is another member's")
    await daemon.journal.resolve(doc.value)
    await daemon.store.commit([Delete(INTENT, intent_name)])


CATCH_UP = 30  # seconds a member waits for its mirror of the store to reach the caller's revision


async def member_body(req):
    """The body of a request another member sends (a dict, {} for none), once the caller is shown
    to be a member and this member has caught up with the store revision the caller saw."""
    req.daemon.cluster.peers.caller(req)
    body = req.json()
    body = body if isinstance(body, dict) else {}
    await caught_up(req.daemon, body.get("revision"))
    return body


async def caught_up(daemon, revision):
    """Wait until this member's mirror of the store holds what the calling member had
    committed when it called (`revision`, sent along by `call`): else we would act on an
    older state than the one we are asked about."""
    if not isinstance(revision, int):
        return
    deadline = daemon.reactor.seconds() + CATCH_UP
    while daemon.store.revision < revision:
        if daemon.reactor.seconds() > deadline:
            raise errors.InternalError(f"This member's state did not reach revision {revision} in {CATCH_UP}s")
        await sleep(0.05, daemon.reactor)


async def call(daemon, member, path, body):
    """`POST path` on `member` with `body` and our store revision: its metadata, or 400
    naming the member and its error."""
    body = dict(body, revision=daemon.store.revision)
    code, _headers, content = await daemon.cluster.peers.call(member, "POST", path, json.dumps(body).encode(),
                                                              {"content-type": "application/json"})
    try:
        answer = json.loads(content)
    except ValueError:
        answer = {}
    if code != 200:
        raise errors.BadRequest(f"Cluster member '{member.name}': {answer.get('error') or f'status {code}'}")
    return answer.get("metadata") or {}
