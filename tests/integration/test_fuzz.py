"""Bad input on every endpoint, made by hypothesis, against a real daemon.

The cases are the router's own endpoint tables (`lxdtx.resources.endpoints()`),
one test per (path pattern, method). Each example fills the pattern's
parameters with odd segments (`..`, `%2F`, `%00`, unicode, 1000 characters,
empty) or with the names of real objects (a container `fz` with a snapshot and
a backup, a profile, a network, a custom volume, the busybox image, a client
certificate), so handlers get past their 404s. It sends odd queries and headers,
and a body: a valid one with a field or two made wrong (wrong type, odd name,
huge, nested deep), the fields its handler module reads with wrong values,
random JSON, or bytes that are not JSON.

Every answer must be a clean refusal or a success: never a 500; a 4xx (or the
501 of what is not implemented) is the LXD error envelope; no error text (also
of a failed operation) shows a traceback, an errno, an object repr, a bytes repr
or the state directory; no path reaches the canary file beside the state
directory. After a refusal the state (what the API lists, the pool's
directories, the links of the daemon's network namespace) is what it was; after
a success it is put back, and compared too. The daemon runs in a network
namespace of its own, so networks fuzzed into being never touch the host's links.
"""

import copy
import importlib
import inspect
import json
import os
import pkgutil
import re
import secrets
import shutil
import subprocess
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lxdtx.device
from lxdtx.config import container as container_config
from lxdtx.config import server as server_config
from lxdtx.network import schema as network_schema
from lxdtx.resources import endpoints
from lxdtx.storage import keys as storage_keys
from tests import imagefiles, pki
from tests.integration.netns import d, ns  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(120)

MAX_JSON_BODY = 4 * 1024 * 1024
EXAMPLES = 50
# Endpoints whose requests mostly succeed and take a second each (a backup is a tarball
# of the container): fewer examples.
SLOW = {("POST", "/1.0/containers/{name}/backups"): 12}

# Not fuzzed: any body is a valid request to stop the daemon.
EXCLUDED = {("PUT", "/internal/shutdown")}

# The body fields a handler module reads: `string(body, "name")`, `body.get("x")`, `source["type"]`.
_READS = re.compile(r'(?:string|mapping|string_list|_bool|_flag|_size|_properties)\(\s*\w+,\s*"([\w.-]+)"'
                    r'|\w*(?:body|source)\w*(?:\.get\(|\[)"([\w.-]+)"')


def _fields_read(handler):
    source = inspect.getsource(inspect.getmodule(handler))
    return sorted({name for match in _READS.findall(source) for name in match if name})


def _cases(slow):
    found = []
    for endpoint in endpoints():
        for method, action in endpoint.actions.items():
            case = (method, endpoint.path)
            if case not in EXCLUDED and (case in SLOW) == slow:
                found.append(pytest.param(method, endpoint.path, _fields_read(action.handler),
                                          id=f"{method} {endpoint.path}"))
    return found


def _config_keys():
    found = set(container_config.KEYS) | set(server_config.SCHEMA.keys) | set(network_schema.KEYS)
    found |= set(storage_keys.COMMON_KEYS) | set(storage_keys.COMMON_VOLUME_KEYS)
    return sorted(found)


def _device_keys():
    found = set()
    for info in pkgutil.iter_modules(lxdtx.device.__path__):
        module = importlib.import_module(f"lxdtx.device.{info.name}")
        found |= set(getattr(module, "KEYS", {}))
    return sorted(found)


CASES, SLOW_CASES = _cases(slow=False), _cases(slow=True)
CONFIG_KEYS = _config_keys() + ["user.x", "volatile.x", "environment.PATH", "", ".", "a" * 300, "\0", "é"]
DEVICE_KEYS = _device_keys()

# -- the objects the fuzzer aims at ---------------------------------------------------------
CONTAINER, SNAPSHOT, BACKUP = "fz", "fzs", "fzb"
# Bridges are host-wide: a name of this run's own keeps two runs at once apart.
PROFILE, NETWORK, VOLUME, POOL = "fzp", f"fz{os.getpid():x}"[:15], "fzvol", "default"
FINISHED_OP, RUNNING_OP = "<finished operation>", "<running operation>"
# DELETE of these with every parameter real would remove a fixture object: one
# parameter of such a request is always odd.
PROTECTED_DELETES = {
    "/1.0/containers/{name}", "/1.0/containers/{name}/snapshots/{snapshot}",
    "/1.0/containers/{name}/backups/{backup}", "/1.0/profiles/{name}", "/1.0/networks/{name}",
    "/1.0/storage-pools/{name}", "/1.0/storage-pools/{pool}/volumes/{type}/{vname:*}",
    "/1.0/images/{fingerprint}", "/1.0/images/aliases/{name}", "/1.0/certificates/{fingerprint}",
}


class World:
    """The daemon, the names of its real objects, and the state every example must leave."""

    def __init__(self, d, ns, canary, secret):
        self.d = d
        self.ns = ns
        self.canary = canary
        self.secret = secret
        self.fingerprint = d.request("GET", "/1.0/images/aliases/busybox").metadata["target"]
        self.certificate = None
        # A certificate not in the trust store, for valid bodies of POST /1.0/certificates.
        self.spare_certificate = pki.client_cert("fz-spare").b64
        self.baseline = None

    def real(self, pattern, param):
        """Names of real objects for parameter `param` of `pattern`."""
        if param == "name":
            for prefix, names in (("/1.0/containers", [CONTAINER]), ("/internal/containers", [CONTAINER]),
                                  ("/1.0/profiles", [PROFILE, "default"]),
                                  ("/1.0/networks", [NETWORK, "lxdbr0", "lo"]),
                                  ("/1.0/storage-pools", [POOL]), ("/1.0/images/aliases", ["busybox"]),
                                  # The fuzzed daemon is no cluster member: "none" is LXD's name for it.
                                  ("/1.0/cluster/members", ["none"]),
                                  # Member-to-member endpoints: the objects they would make or act on.
                                  ("/internal/cluster/storage-pools", [POOL]),
                                  ("/internal/cluster/networks", [NETWORK]),
                                  ("/internal/cluster/containers", [CONTAINER]),
                                  ("/internal/cluster/intents", ["1"])):
                if pattern.startswith(prefix):
                    return names
        if param == "fingerprint":
            fp = self.fingerprint if pattern.startswith("/1.0/images") else self.certificate
            return [fp, fp[:12]]
        return {
            "pool": [POOL], "type": ["custom", "containers", "images", "container", "image"],
            "vname": [VOLUME, CONTAINER, f"{CONTAINER}/{SNAPSHOT}", self.fingerprint],
            "snapshot": [SNAPSHOT], "backup": [BACKUP], "file": ["lxc.log", "lxc.conf", "console.log"],
            # Made for each request that draws them: a finished operation, and a token one still running.
            "id": [FINISHED_OP, RUNNING_OP],
        }[param]

    def every_real_name(self):
        return [CONTAINER, SNAPSHOT, BACKUP, PROFILE, NETWORK, VOLUME, POOL, "lxdbr0", "busybox", self.fingerprint]

    def template(self, method, pattern):
        """A valid body for a request that creates, renames or acts (None: nothing to start from)."""
        rename = {"name": "fzn"}
        return {
            ("PUT", "/1.0"): {"config": {}},
            ("PATCH", "/1.0"): {"config": {}},
            ("POST", "/1.0/certificates"): {"type": "client", "certificate": self.spare_certificate, "name": "fzn"},
            ("POST", "/1.0/containers"): {"name": "fzn", "source": {"type": "none"}, "profiles": ["default"],
                                          "config": {}, "devices": {}, "ephemeral": False},
            ("POST", "/1.0/containers/{name}"): rename,
            ("PUT", "/1.0/containers/{name}/state"): {"action": "start", "timeout": 5, "force": False,
                                                      "stateful": False},
            ("POST", "/1.0/containers/{name}/exec"): {
                "command": ["true"], "environment": {"A": "b"}, "wait-for-websocket": False, "interactive": False,
                "record-output": False, "width": 80, "height": 24},
            ("POST", "/1.0/containers/{name}/console"): {"width": 80, "height": 24, "type": "console"},
            ("POST", "/1.0/containers/{name}/snapshots"): {"name": "fzn", "stateful": False},
            ("POST", "/1.0/containers/{name}/snapshots/{snapshot}"): rename,
            ("POST", "/1.0/containers/{name}/backups"): {"name": "fzn", "container_only": True,
                                                         "optimized_storage": False,
                                                         "expiry": "2099-01-01T00:00:00Z"},
            ("POST", "/1.0/containers/{name}/backups/{backup}"): rename,
            ("POST", "/1.0/profiles"): {"name": "fzn", "description": "", "config": {}, "devices": {}},
            ("POST", "/1.0/profiles/{name}"): rename,
            ("POST", "/1.0/networks"): {"name": "fzn", "type": "bridge", "description": "", "config": {
                "ipv4.address": "10.231.9.1/24", "ipv6.address": "none"}},
            ("POST", "/1.0/networks/{name}"): rename,
            ("POST", "/1.0/storage-pools"): {"name": "fzn", "driver": "dir", "config": {}, "description": ""},
            ("POST", "/1.0/storage-pools/{pool}/volumes/{type}"): {"name": "fzn", "config": {}, "source": {
                "type": "copy", "pool": POOL, "name": VOLUME}},
            ("POST", "/1.0/storage-pools/{pool}/volumes/{type}/{vname:*}"): {"name": "fzn", "pool": POOL},
            ("POST", "/1.0/images"): {"source": {"type": "container", "name": CONTAINER}, "public": False,
                                      "properties": {}, "aliases": [], "compression_algorithm": "none"},
            ("POST", "/1.0/images/aliases"): {"name": "fzn", "target": self.fingerprint, "description": ""},
            ("POST", "/1.0/images/aliases/{name}"): rename,
        }.get((method, pattern))


# -- state -------------------------------------------------------------------------------------
CONTAINERS = "/1.0/containers?recursion=1"
SNAPSHOTS = f"/1.0/containers/{CONTAINER}/snapshots?recursion=1"
BACKUPS = f"/1.0/containers/{CONTAINER}/backups?recursion=1"
PROFILES, NETWORKS, POOLS = "/1.0/profiles?recursion=1", "/1.0/networks?recursion=1", "/1.0/storage-pools?recursion=1"
VOLUMES = f"/1.0/storage-pools/{POOL}/volumes?recursion=1"
IMAGES, ALIASES = "/1.0/images?recursion=1", "/1.0/images/aliases?recursion=1"
CERTIFICATES = "/1.0/certificates?recursion=1"
METADATA, TEMPLATES = f"/1.0/containers/{CONTAINER}/metadata", f"/1.0/containers/{CONTAINER}/metadata/templates"
LISTED = [CONTAINERS, SNAPSHOTS, BACKUPS, PROFILES, NETWORKS, POOLS, VOLUMES, IMAGES, ALIASES, CERTIFICATES,
          METADATA]


# What a start writes down and a stop leaves behind (the nic's host side, the last power
# state): a container started by a request that succeeded and stopped again shows them.
_RUNTIME_KEYS = re.compile(r"volatile\.(last_state\.power|[^.]+\.host_name|[^.]+\.name)")


def snapshot(world):
    """What a refused request must leave as it was: API objects, pool directories, links, canary."""
    d = world.d
    state = {path: d.request("GET", path).metadata for path in LISTED}
    for container in state[CONTAINERS]:
        for key in ("config", "expanded_config"):
            container[key] = {k: v for k, v in container[key].items() if not _RUNTIME_KEYS.fullmatch(k)}
    state["config"] = d.request("GET", "/1.0").metadata["config"]
    # None while the container is away (renamed by a success the undo puts back).
    listed = d.request("GET", TEMPLATES).metadata
    state["templates"] = None if listed is None else {
        name: d.request("GET", f"{TEMPLATES}?path={quote(name, safe='')}").body for name in listed}
    pool = os.path.join(d.dir, "storage-pools", POOL)
    state["pool dirs"] = {sub: sorted(os.listdir(os.path.join(pool, sub))) for sub in sorted(os.listdir(pool))}
    state["links"] = links(world.ns)
    state["canary"] = {}
    for name in sorted(os.listdir(world.canary)):
        with open(os.path.join(world.canary, name), "rb") as f:
            state["canary"][name] = f.read()
    return state


def links(ns):
    """Name, MTU and alias of each link in the daemon's namespace. Not its flags or MAC: a bridge's
    change as a container's port comes and goes, which a start put back by a stop still shows."""
    found = []
    out = subprocess.run(["ip", "-n", ns.name, "-o", "link"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        name = line.split(": ", 2)[1]
        mtu = re.search(r" mtu (\d+)", line)
        alias = re.search(r" alias (.*)$", line)
        found.append((name, mtu and mtu.group(1), alias and alias.group(1)))
    return found


def _diff(before, after, where=""):
    """The places two states differ, as `where: before -> after` lines."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [line for key in sorted(set(before) | set(after), key=str)
                for line in _diff(before.get(key), after.get(key), f"{where}/{key}")]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [line for i, (b, a) in enumerate(zip(before, after)) for line in _diff(b, a, f"{where}[{i}]")]
    return [] if before == after else [f"{where}: {before!r:.300} -> {after!r:.300}"]


def _wait(d, answer, timeout=120):
    """The final operation of a 202; token and websocket operations nobody will use are cancelled."""
    op = answer.json["metadata"]
    if op["class"] != "task":
        d.request("DELETE", f"/1.0/operations/{op['id']}")
    return d.request("GET", f"/1.0/operations/{op['id']}/wait?timeout={timeout}", timeout=timeout + 10).metadata


def _settle(d):
    """Wait for every operation still running; cancel the ones waiting for a client."""
    running = d.request("GET", "/1.0/operations?recursion=1").metadata.get("running", [])
    for op in running:
        if op["class"] != "task":
            d.request("DELETE", f"/1.0/operations/{op['id']}")
        d.request("GET", f"/1.0/operations/{op['id']}/wait?timeout=120", timeout=130)


def _done(d, answer):
    if answer.status == 202:
        op = _wait(d, answer)
        assert op["status"] == "Success", op
    else:
        assert answer.status < 300, answer


def _named(objects, key="name"):
    return {obj[key]: obj for obj in objects or []}


def _url(template):
    return lambda name: template.format(quote(name, safe=""))


def _undo_named(d, base, now, url, writable, rename=None, delete=None):
    """Put a collection back: a renamed object gets its name back, new ones go, changed ones are reset."""
    missing = [name for name in base if name not in now]
    extra = [name for name in now if name not in base]
    if len(missing) == 1 and len(extra) == 1:
        (rename or (lambda old, new: _done(d, d.request("POST", url(old), {"name": new}))))(extra[0], missing[0])
        extra = []
    for name in extra:
        (delete or (lambda name: _done(d, d.request("DELETE", url(name)))))(name)
    for name, obj in base.items():
        if name in now and now[name] != obj:
            _done(d, d.request("PUT", url(name), writable(obj)))


def _fields(*names):
    return lambda obj: {name: obj[name] for name in names}


def _stop(d, name):
    answer = d.request("PUT", f"/1.0/containers/{quote(name, safe='')}/state", {"action": "stop", "force": True})
    if answer.status == 202:
        _wait(d, answer)


def undo(world):
    """Bring the daemon back to the baseline after a request that succeeded.

    A few passes: putting one thing back can change another (a rename back marks the
    container's templates to apply again, which the next pass resets).
    """
    for _ in range(3):
        _settle(world.d)
        now = snapshot(world)
        _accept_use(world.baseline, now)
        if now == world.baseline:
            return
        _undo_pass(world, now)


def _accept_use(base, now):
    """A success may use a container or an image (a start, a publish): their `last_used_at` stays."""
    for listed, key in ((CONTAINERS, "name"), (IMAGES, "fingerprint")):
        used = {obj[key]: obj["last_used_at"] for obj in now[listed] or []}
        for obj in base[listed]:
            obj["last_used_at"] = used.get(obj[key], obj["last_used_at"])


def _undo_pass(world, now):
    d, base = world.d, world.baseline
    container_url = _url("/1.0/containers/{}")

    def delete_container(name):
        _stop(d, name)
        _done(d, d.request("DELETE", container_url(name)))

    def rename_container(old, new):
        _stop(d, old)
        _done(d, d.request("POST", container_url(old), {"name": new}))

    for name, obj in _named(now[CONTAINERS]).items():
        if obj["status"] != "Stopped":
            _stop(d, name)
    _undo_named(d, _named(base[CONTAINERS]), _named(now[CONTAINERS]), container_url,
                _fields("architecture", "config", "devices", "profiles", "ephemeral", "description"),
                rename=rename_container, delete=delete_container)
    now = snapshot(world)
    for listed, url in ((SNAPSHOTS, f"/1.0/containers/{CONTAINER}/snapshots/{{}}"),
                        (BACKUPS, f"/1.0/containers/{CONTAINER}/backups/{{}}")):
        _undo_named(d, {o["name"].split("/", 1)[1]: o for o in base[listed]},
                    {o["name"].split("/", 1)[1]: o for o in now[listed] or []}, _url(url), lambda o: o)
    _undo_named(d, _named(base[PROFILES]), _named(now[PROFILES]), _url("/1.0/profiles/{}"),
                _fields("config", "description", "devices"))
    _undo_named(d, _named(n for n in base[NETWORKS] if n["managed"]),
                _named(n for n in now[NETWORKS] if n["managed"]), _url("/1.0/networks/{}"),
                _fields("config", "description"))
    _undo_named(d, _named(v for v in base[VOLUMES] if v["type"] == "custom"),
                _named(v for v in now[VOLUMES] if v["type"] == "custom"),
                _url(f"/1.0/storage-pools/{POOL}/volumes/custom/{{}}"), _fields("config", "description"))
    _undo_named(d, _named(base[POOLS]), _named(now[POOLS]), _url("/1.0/storage-pools/{}"),
                _fields("config", "description"))
    _undo_named(d, _named(base[ALIASES]), _named(now[ALIASES]), _url("/1.0/images/aliases/{}"),
                _fields("target", "description"))
    _undo_named(d, _named(base[IMAGES], "fingerprint"), _named(now[IMAGES], "fingerprint"),
                _url("/1.0/images/{}"), _fields("public", "auto_update", "properties"))
    _undo_named(d, _named(base[CERTIFICATES], "fingerprint"), _named(now[CERTIFICATES], "fingerprint"),
                _url("/1.0/certificates/{}"), _fields("name", "type"))
    if now["config"] != base["config"]:
        _done(d, d.request("PUT", "/1.0", {"config": base["config"]}))
    if now["templates"] is None:  # the container was away: its metadata is seen to next pass
        return
    if now[METADATA] != base[METADATA]:
        _done(d, d.request("PUT", METADATA, base[METADATA]))
    for name in now["templates"]:
        url = f"{TEMPLATES}?path={quote(name, safe='')}"
        if name not in base["templates"]:
            _done(d, d.request("DELETE", url))
    for name, content in base["templates"].items():
        if now["templates"].get(name) != content:
            _done(d, d.request("PUT", f"{TEMPLATES}?path={quote(name, safe='')}", raw=content))


# -- checks --------------------------------------------------------------------------------------
_LEAKS = [
    (re.compile(r"Traceback"), "a traceback"),
    (re.compile(r"Errno"), "an errno"),
    (re.compile(r"<[^<>]*\bat 0x[0-9a-fA-F]+>"), "an object repr"),
    (re.compile(r"(?<![\w'\"\\])b'[^']*'|(?<![\w'\"\\])b\"[^\"]*\""), "a bytes repr"),
    (re.compile(r"\b[A-Z]\w+ \{ \w+: "), "a debug dump"),
]


def _strings(value):
    """Every string inside a JSON-like value, keys too."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def check_text(world, text, sent):
    """No leak in an error text; what the client sent itself may be quoted back."""
    assert isinstance(text, str) and text, f"empty error text: {text!r}"
    assert world.d.dir not in text, f"error names the state directory: {text!r}"
    scrubbed = text
    for value in sorted({s for s in sent if len(s) > 1}, key=len, reverse=True):
        scrubbed = scrubbed.replace(repr(value), "").replace(value, "")
    for pattern, what in _LEAKS:
        assert not pattern.search(scrubbed), f"error text shows {what}: {text!r}"


def check_error(world, answer, sent):
    """A 4xx (or 501) is the LXD error envelope with a clean text."""
    assert answer.json is not None, f"not JSON: {answer!r}"
    assert set(answer.json) == {"type", "error", "error_code"}, answer
    assert answer.json["type"] == "error" and answer.json["error_code"] == answer.status, answer
    assert answer.headers.get("Content-Type") == "application/json", answer.headers
    check_text(world, answer.json["error"], sent)


# -- strategies -----------------------------------------------------------------------------------
# Segments as they go on the wire (already percent-encoded where they need it).
ODD_SEGMENTS = [
    "", ".", "..", "%2E", "%2E%2E", "%2F", "a%2Fb", "..%2F..%2F..%2Fetc", "%00", "fz%00", "%FF%FE", "%",
    "%zz", "x" * 1000, quote("é" * 100), quote("\U0001f4a5"), quote(" "), quote("\t\n"), "-", "-fz",
    quote("fz "), "fz%2F..%2F..", "a/b", "../..", "fz/..", quote("'\"<>{}"), quote("*"), "0" * 70,
    "%2E%2E%2F%2E%2E%2Fsecret", "%ED%A0%80",
]
ODD_NAMES = [
    "", ".", "..", "/", "a/b", "../../etc", "\0", "a\0b", "\ud800", "a\udcff", "é", "\U0001f4a5", " ", "a b",
    "\n", "\x7f", "x" * 1000, "-", "-a", "a-", "0", "9z", "%2F", "%00", "*", "default", "none", "'\"",
    "${x}", "a" * 64, "a" * 256, "é" * 200, "fzn",
]
# Values a key might take, so validation goes past the type check.
PLAUSIBLE = [
    "true", "false", "1", "0", "-1", "10MB", "1GB", "none", "auto", "", "bridged", "macvlan", "/", "/mnt",
    "/dev/null", "eth0", "lxdbr0", NETWORK, "default", "10.0.0.1/24", "fd00::1/64", "1.5", "100%", "0-1",
    "yes", "1000000:1000000", "lxc.aa_profile=unconfined", "both", "1500", "99999999999999999999",
]
FIELDS = [
    "name", "config", "devices", "profiles", "source", "description", "architecture", "ephemeral",
    "stateful", "type", "driver", "target", "action", "timeout", "force", "command", "environment",
    "interactive", "wait-for-websocket", "record-output", "width", "height", "restore", "migration",
    "pool", "public", "auto_update", "properties", "aliases", "filename", "compression_algorithm",
    "certificate", "password", "expiry", "container_only", "optimized_storage", "instance_type", "live",
]
DEVICE_TYPES = ["nic", "disk", "unix-char", "unix-block", "usb", "gpu", "infiniband", "proxy", "none", "", "x"]

_scalars = (st.none() | st.booleans() | st.integers() | st.integers(-(2 ** 70), 2 ** 70)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)


def odd_names(world):
    return st.sampled_from(ODD_NAMES) | st.sampled_from(world.every_real_name()) | st.text(max_size=20)


def _huge_string():
    return st.integers(4000, 1 << 20).map(lambda n: "x" * n)


def _deep():
    """A value nested deeper than any handler expects: within the daemon's bound, at it, past it."""
    return st.sampled_from([8, 40, 62, 63, 64, 65, 900]).map(lambda n: json.loads("[" * n + "]" * n))


def wrong_values(world):
    return (odd_names(world) | _scalars | st.sampled_from(PLAUSIBLE) | st.lists(_scalars, max_size=3)
            | st.dictionaries(st.text(max_size=5), _scalars, max_size=3) | _huge_string() | _deep()
            | st.sampled_from([0, -1, 2 ** 63, -(2 ** 63), 2 ** 64, 1e308, -1e308, 0.5, True, False, [], {},
                               [None], {"": None}]))


def configs(world):
    values = st.sampled_from(PLAUSIBLE) | wrong_values(world)
    return st.dictionaries(st.sampled_from(CONFIG_KEYS) | st.text(max_size=10), values, max_size=3)


def devices(world):
    values = st.sampled_from(PLAUSIBLE) | wrong_values(world)
    device = st.dictionaries(st.sampled_from(DEVICE_KEYS), values, max_size=4)
    typed = st.builds(lambda kind, rest: {**rest, "type": kind}, st.sampled_from(DEVICE_TYPES), device)
    return st.dictionaries(odd_names(world), typed | device | wrong_values(world), max_size=2)


def sources(world):
    kind = st.sampled_from(["image", "copy", "migration", "none", "container", "snapshot", "url", "", 5])
    source = st.dictionaries(st.sampled_from(["alias", "fingerprint", "source", "name", "pool", "mode",
                                              "server", "properties", "live", "container_only"]),
                             wrong_values(world), max_size=3)
    return st.builds(lambda kind, rest: {**rest, "type": kind}, kind, source) | wrong_values(world)


def field_values(world, field):
    """Values of the wrong type or shape for `field`, with shapes that field is read as."""
    special = {
        "name": odd_names(world), "config": configs(world), "devices": devices(world), "source": sources(world),
        "profiles": st.lists(odd_names(world), max_size=3), "command": st.lists(odd_names(world), max_size=3),
        "environment": st.dictionaries(odd_names(world), odd_names(world), max_size=2),
        "properties": st.dictionaries(odd_names(world), wrong_values(world), max_size=2),
        "action": st.sampled_from(["start", "stop", "restart", "freeze", "unfreeze"]),
        "aliases": st.lists(st.dictionaries(st.sampled_from(["name", "description", "target"]),
                                            wrong_values(world), max_size=2), max_size=2),
    }
    if field in special:
        return special[field] | wrong_values(world)
    return wrong_values(world)


def known_fields(world, fields):
    """A body of the fields handlers read, each with a value of the wrong type or shape."""
    names = st.sampled_from(FIELDS)
    if fields:
        names = st.sampled_from(fields) | st.sampled_from(fields) | names
    return st.lists(names, min_size=1, max_size=4, unique=True).flatmap(
        lambda chosen: st.fixed_dictionaries({f: field_values(world, f) for f in chosen}))


def mutated(world, template, fields):
    """`template` (a valid body) with one or two fields replaced, added, nested into or dropped."""
    keys = sorted(template)
    nested = [k for k in keys if isinstance(template[k], dict)]
    settable = st.sampled_from(sorted(set(keys) | set(fields) or {"name"}))
    change = settable.flatmap(lambda key: st.tuples(st.just("set"), st.just(key), field_values(world, key)))
    options = [change, change]
    if keys:
        options.append(st.tuples(st.just("drop"), st.sampled_from(keys), st.none()))
    if nested:
        inner = st.tuples(st.sampled_from(CONFIG_KEYS + DEVICE_KEYS + ["type", "name", "pool"]),
                          st.sampled_from(PLAUSIBLE) | wrong_values(world))
        options.append(st.tuples(st.just("nest"), st.sampled_from(nested), inner))

    def apply(changes):
        body = copy.deepcopy(template)
        for kind, key, value in changes:
            if kind == "set":
                body[key] = value
            elif kind == "drop":
                body.pop(key, None)
            elif isinstance(body.get(key), dict):
                body[key][value[0]] = value[1]
        return body

    return st.lists(st.one_of(options), min_size=1, max_size=2).map(apply)


_RAW_BODIES = [
    b"", b"{", b'{"name": ', b"[]", b"null", b"0", b'"x"', b"\xff\xfe\x00", b"\x00" * 10,
    b'{"name": "\xff"}', b'{"a": 1, "a": 2}', b'{"timeout": NaN}', b'{"timeout": Infinity}',
    b'{"timeout": -Infinity, "action": "stop"}', b'{"width": 1e400}', b'{"name": "\\ud800"}',
    b'{"config": {"limits.memory": "\\udcff"}}', b"[" * 100000 + b"]" * 100000,
    b'{"config": ' + b"[" * 100000 + b"]" * 100000 + b"}", b'{"name": ' + b"{" * 10 + b"}",
    b'{"timeout": 1' + b"0" * 5000 + b"}", b'{"name": "' + b"x" * (MAX_JSON_BODY - 100) + b'"}',
    b'{"name": 1' + b"0" * 400 + b"}", b"\xef\xbb\xbf{}", b'{"description": "\\u0000"}',
    b'{"config": {"user.\\ud800": "x"}}', b"\xed\xa0\x80",
]


# Uploads (an image on POST /1.0/images, a backup on POST /1.0/containers), bad and good:
# links out of the tree, absolute and `..` names, cut short, a valid image.
TARBALLS = [
    imagefiles.tarball([("backup", None), ("backup/index.yaml", b"name: x\n"),
                        ("backup/container", ("hardlink", "missing"))], "gzip"),
    imagefiles.tarball([("/etc/passwd", b"x\n"), ("metadata.yaml", imagefiles.metadata_yaml())], "gzip"),
    imagefiles.tarball([("backup/../../escape", b"x\n")], "xz"),
    imagefiles.tarball([("backup", ("symlink", "/")), ("backup/index.yaml", b"name: x\n")], "none"),
    imagefiles.tarball([("backup", None), ("backup/index.yaml", b"snapshots: [../x]\n"),
                        ("backup/container", None)], "bzip2"),
    imagefiles.tarball([("metadata.yaml", b"{{{")] + imagefiles.rootfs_entries(), "gzip"),
    imagefiles.unified("gzip")[:-40],
    imagefiles.unified("xz", nonce="fz"),
]


def _encoded(values):
    return values.map(lambda v: (json.dumps(v).encode(), list(_strings(v))))


def bodies(world, method, pattern, fields, template):
    """(bytes or None, the strings in it): the body of one request.

    Picked by a number, not by `one_of`, so the share of each kind is what it says:
    mostly a valid body made wrong where there is one, else the fields read made wrong.
    """
    none = st.just((None, []))
    raw = st.sampled_from(_RAW_BODIES).map(lambda b: (b, [b.decode("utf-8", "replace")]))
    fields_made_wrong = _encoded(known_fields(world, fields))
    kinds = [none, raw, _encoded(json_values), fields_made_wrong, fields_made_wrong]
    if template is not None:
        kinds += [_encoded(mutated(world, template, fields))] * 5
    if method == "POST" and pattern in ("/1.0/containers", "/1.0/images"):
        kinds += [st.sampled_from(TARBALLS).map(lambda b: (b, []))] * 3
    if method in ("GET", "DELETE"):
        kinds = [none, none, none, raw, fields_made_wrong]
    return st.integers(0, len(kinds) - 1).flatmap(lambda i: kinds[i])


HEADERS = [
    "Content-Type", "If-Match", "X-LXD-uid", "X-LXD-gid", "X-LXD-mode", "X-LXD-type", "X-LXD-write",
    "X-LXD-fingerprint", "X-LXD-properties", "X-LXD-public", "X-LXD-filename", "X-LXD-pool", "X-LXD-name",
    "Range", "Upgrade", "Connection",
]
HEADER_VALUES = [
    "", "application/octet-stream", "application/json", "multipart/form-data", "multipart/form-data; boundary=",
    "multipart/form-data; boundary=xyz", "text/plain", "-1", "0", "4294967296", "99999999999999999999", "0x1f",
    "7777", "abc", "directory", "symlink", "file", "append", "overwrite", "bogus", "=", "a=b&c", "%00",
    "bytes=5-1", "bytes=-0", "bytes=0-", "websocket", "Upgrade", "x" * 5000, '"' + "0" * 64 + '"',
]


def headers():
    values = st.sampled_from(HEADER_VALUES) | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e),
                                                      max_size=20)
    return st.dictionaries(st.sampled_from(HEADERS), values, max_size=3)


QUERY_KEYS = ["recursion", "filter", "path", "timeout", "secret", "target", "project", "type", "fields"]
PATHS = ["/", "", ".", "..", "/etc/hostname", "/bin", "/bin/busybox", "/nonexistent/x", "/etc/../..",
         "//", "/dev/null", "/proc/self/environ", "\0", "/etc\0x", "x" * 5000, "/" + "é" * 100, "/\udcff"]


def queries(world, pattern):
    """Query parameters; the one an endpoint reads (`path` of the file API, ...) is mostly there."""
    secret = os.path.join(world.canary, "secret")
    paths = st.sampled_from(PATHS + [secret, "../" * 12 + secret[1:], "/proc/1/root" + secret, world.canary])
    value = (st.sampled_from(["-1", "0", "1", "2", "99999999999999999999", "1e309", "nan", "inf", "abc", ""])
             | paths | odd_names(world))
    others = st.dictionaries(st.sampled_from(QUERY_KEYS), value, max_size=3)
    templates = st.sampled_from(["hostname.tpl", "hosts.tpl", "fzn.tpl"])
    read = {"/files": ("path", paths | odd_names(world)), "/templates": ("path", templates | paths | odd_names(world)),
            "/wait": ("timeout", value),
            "/websocket": ("secret", value)}
    for suffix, (key, values) in read.items():
        if pattern.endswith(suffix):
            return st.builds(lambda given, rest: {**rest, key: given}, values, others) | others
    return others


def _encode(text):
    return quote(text, safe="/", errors="surrogatepass")


# -- the fuzzer ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(d, ns):
    """The module's daemon with real objects to aim at, and a canary file next to its state.

    What the examples create is removed as they go; the fixture objects go with the
    daemon and its state directory (the `d` fixture), the canary here.
    """
    canary = os.path.join(os.path.dirname(d.dir), f"lxdtx-fz-canary-{secrets.token_hex(4)}")
    os.makedirs(canary)
    try:
        secret = f"canary {secrets.token_hex(8)}\n".encode()
        with open(os.path.join(canary, "secret"), "wb") as f:
            f.write(secret)
        d.lxc("init", "busybox", CONTAINER)
        for path, body in ((f"/1.0/containers/{CONTAINER}/snapshots", {"name": SNAPSHOT}),
                           (f"/1.0/containers/{CONTAINER}/backups", {"name": BACKUP, "container_only": True})):
            _done(d, d.request("POST", path, body))
        _done(d, d.request("POST", "/1.0/profiles", {"name": PROFILE, "config": {"limits.cpu": "1"}}))
        _done(d, d.request("POST", "/1.0/networks", {"name": NETWORK, "config": {
            "ipv4.address": "10.231.7.1/24", "ipv6.address": "none"}}))
        _done(d, d.request("POST", f"/1.0/storage-pools/{POOL}/volumes/custom", {"name": VOLUME}))
        cert = pki.client_cert("fz")
        _done(d, d.request("POST", "/1.0/certificates", {"certificate": cert.b64, "name": "fzc"}))
        w = World(d, ns, canary, secret)
        w.certificate = cert.fingerprint
        w.baseline = snapshot(w)
        yield w
        _settle(d)
    finally:
        shutil.rmtree(canary, ignore_errors=True)


def operation(world, running):
    """The id of a new operation that changes nothing: a finished image refresh, or a running
    image secret (a token operation, cancelled after the example)."""
    d = world.d
    answer = d.request("POST", f"/1.0/images/{world.fingerprint}/{'secret' if running else 'refresh'}")
    assert answer.status == 202, answer
    if not running:
        _wait(d, answer)
    return answer.json["metadata"]["id"]


def request_for(world, method, pattern, fields, data):
    """Draw one request: (path with query, body, headers, every string the client sent)."""
    params = re.findall(r"\{(\w+)(?::\*)?\}", pattern)
    segments, real = {}, {}
    for param in params:
        # Three in five real, so most requests get past their 404s.
        kinds = [st.sampled_from(world.real(pattern, param))] * 3
        kinds += [st.sampled_from(ODD_SEGMENTS), st.text(max_size=12).map(_encode)]
        choice = data.draw(st.integers(0, 4).flatmap(lambda i: kinds[i]), label=param)
        real[param] = choice in world.real(pattern, param)
        if choice in (FINISHED_OP, RUNNING_OP):
            # Waiting on a running operation would wait for good.
            choice = operation(world, running=choice == RUNNING_OP and not pattern.endswith("/wait"))
        segments[param] = choice
    if method == "DELETE" and pattern in PROTECTED_DELETES and params and all(real.values()):
        segments[params[-1]] = data.draw(st.sampled_from(ODD_SEGMENTS), label=f"{params[-1]} (odd)")
    path = re.sub(r"\{(\w+)(?::\*)?\}", lambda m: segments[m.group(1)], pattern)
    sent = [unquote(s) for s in segments.values()]
    template = world.template(method, pattern)
    if method in ("PUT", "PATCH") and template is None:
        # The object itself, as GET shows it: what a client sends back changed.
        current = world.d.request("GET", path)
        template = current.metadata if current.status == 200 and isinstance(current.metadata, dict) else None
    query = data.draw(queries(world, pattern), label="query")
    if query:
        path += "?" + "&".join(f"{quote(k)}={quote(v, safe='', errors='surrogatepass')}" for k, v in query.items())
        sent += list(query.values())
    body, strings = data.draw(bodies(world, method, pattern, fields, template), label="body")
    sent += strings
    extra = data.draw(headers(), label="headers")
    if body in TARBALLS:
        extra.setdefault("Content-Type", "application/octet-stream")
    sent += list(extra.values())
    return path, body, extra, sent


def _settings(examples):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("method,pattern,fields", CASES)
@_settings(EXAMPLES)
@given(data=st.data())
def test_bad_input(world, method, pattern, fields, data):
    """Whatever the input, a clean answer, and the state is as it was (or put back after a success)."""
    fuzz_one(world, method, pattern, fields, data)


@pytest.mark.parametrize("method,pattern,fields", SLOW_CASES)
@_settings(min(SLOW.values()))
@given(data=st.data())
def test_bad_input_slow(world, method, pattern, fields, data):
    """The same for endpoints whose successes take long, with fewer examples."""
    fuzz_one(world, method, pattern, fields, data)


def fuzz_one(world, method, pattern, fields, data):
    """Send one drawn request and check the answer, the operation it started and the state after."""
    d = world.d
    path, body, extra, sent = request_for(world, method, pattern, fields, data)
    answer = d.request(method, path, raw=body, headers=extra, timeout=120)
    assert answer.status < 500 or answer.status == 501, answer
    assert world.secret not in (answer.body or b""), f"the canary was read: {answer!r}"
    changed = False
    if answer.status == 416:
        # A download's Range refused is HTTP's business (as Go's ServeContent answers it): no envelope.
        assert re.fullmatch(r"bytes \*/\d+", answer.headers.get("Content-Range", "")), answer.headers
    elif answer.status >= 400:
        check_error(world, answer, sent)
    elif answer.status == 202:
        op = _wait(d, answer)
        assert op["status"] in ("Success", "Failure", "Cancelled"), op
        if op["status"] == "Failure":
            check_text(world, op["err"], sent)
        changed = op["status"] == "Success"
    else:
        changed = method != "GET"
    _settle(d)
    if changed:
        undo(world)
    after = snapshot(world)
    assert after == world.baseline, (
        f"{'could not undo a success' if changed else 'state changed'}:\n" + "\n".join(_diff(world.baseline, after)))
