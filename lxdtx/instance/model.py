# -*- test-case-name: tests.integration.test_containers,tests.integration.test_names -*-
"""Container documents: names, the API object, expansion through profiles, ETags.

A container document (store kind `container`) holds the writable state and a
few daemon-kept fields:

    {"architecture", "config", "devices", "ephemeral", "profiles", "description",
     "stateful", "created_at", "last_used_at", "pool"}

`config` and `devices` are the container's own; the expanded ones add its
profiles (in order) underneath.
"""

import random
import re

from lxdtx import architectures, device, errors, timeutil

KIND = "container"
SNAPSHOT_KIND = "snapshot"

_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9-]{0,62}")

_ADJECTIVES = ["brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "kind", "lively", "merry",
               "nice", "proud", "quick", "sharp", "smart", "sunny", "tidy", "vivid", "witty", "zesty"]
_NOUNS = ["otter", "falcon", "badger", "heron", "lynx", "marmot", "panda", "quokka", "raven", "salmon",
          "tapir", "walrus", "yak", "zebra", "beetle", "coyote", "dingo", "gecko", "ibis", "koala"]


def check_name(name):
    """400 unless `name` is a valid container name."""
    if not isinstance(name, str) or not name:
        raise errors.BadRequest("Container name is required")
    if "/" in name:
        raise errors.BadRequest("Container names may not contain slashes")
    if not _NAME.fullmatch(name) or name.endswith("-"):
        raise errors.BadRequest(
            f"Invalid container name '{name}': 1-63 letters, digits and dashes, starting with a "
            "letter and not ending with a dash")


def check_snapshot_name(name):
    if not isinstance(name, str) or not name:
        raise errors.BadRequest("Snapshot name is required")
    if "/" in name:
        raise errors.BadRequest("Snapshot names may not contain slashes")


def random_name(taken):
    for _ in range(100):
        name = f"{random.choice(_ADJECTIVES)}-{random.choice(_NOUNS)}"
        if name not in taken:
            return name
    return f"c-{random.randrange(1 << 32):08x}"


def check_architecture(name):
    if name not in architectures.ALIASES:
        raise errors.BadRequest(f"Unsupported architecture: {name}")


def new_document(*, architecture, config, devices, profiles, ephemeral=False, description="", pool="",
                 location=""):
    """`location`: the id of the cluster member the container lives on ("" when not clustered)."""
    now = timeutil.now()
    return {
        "architecture": architecture, "config": config, "devices": devices, "profiles": profiles,
        "ephemeral": bool(ephemeral), "description": description or "", "stateful": False,
        "created_at": now, "last_used_at": timeutil.EPOCH, "pool": pool, "location": location,
    }


def here(daemon):
    """The `location` of a container made on this daemon."""
    cluster = getattr(daemon, "cluster", None)
    return cluster.member_id if cluster is not None else ""


def is_local(daemon, value):
    """Whether the container of document `value` lives on this daemon: a clustered store
    holds every member's containers, and only the owner touches one on the host."""
    member = here(daemon)
    return not member or value.get("location", "") == member


def writable(value):
    """What a container's ETag covers."""
    return [value.get("architecture"), value.get("config", {}), value.get("devices", {}),
            value.get("ephemeral", False), value.get("profiles", [])]


def expand(value, profile_values):
    """(expanded config, expanded devices) given the profile documents' values in order."""
    config = {}
    for profile in profile_values:
        config.update(profile.get("config", {}))
    config.update(value.get("config", {}))
    devices = device.expand([p.get("devices", {}) for p in profile_values], value.get("devices", {}))
    return config, devices


def render(name, value, expanded_config, expanded_devices, status, status_code):
    """The container object of the API."""
    return {
        "architecture": value.get("architecture", ""),
        "config": value.get("config", {}),
        "devices": value.get("devices", {}),
        "ephemeral": value.get("ephemeral", False),
        "profiles": value.get("profiles", []),
        "stateful": value.get("stateful", False),
        "description": value.get("description", ""),
        "created_at": value.get("created_at", timeutil.EPOCH),
        "expanded_config": expanded_config,
        "expanded_devices": expanded_devices,
        "name": name,
        "status": status,
        "status_code": status_code,
        "last_used_at": value.get("last_used_at", timeutil.EPOCH),
        "location": "none",
    }


def render_snapshot(name, value, expanded_config, expanded_devices):
    return {
        "architecture": value.get("architecture", ""),
        "config": value.get("config", {}),
        "created_at": value.get("created_at", timeutil.EPOCH),
        "devices": value.get("devices", {}),
        "ephemeral": value.get("ephemeral", False),
        "expanded_config": expanded_config,
        "expanded_devices": expanded_devices,
        "last_used_at": value.get("last_used_at", timeutil.EPOCH),
        "name": name,
        "profiles": value.get("profiles", []),
        "stateful": value.get("stateful", False),
    }
