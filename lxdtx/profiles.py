# -*- test-case-name: tests.integration.test_profiles -*-
"""Profiles: stored config and devices shared by containers."""

import re

from lxdtx import device, errors
from lxdtx.config import container as container_config
from lxdtx.state import ABSENT, Delete, Put

KIND = "profile"
DEFAULT = "default"
# A name is a path segment of the profile's URL: bounded, so that URL fits a request line.
MAX_NAME = 255


def check_name(name):
    if not isinstance(name, str) or not name:
        raise errors.BadRequest("No name provided")
    if "/" in name:
        raise errors.BadRequest("Profile names may not contain slashes")
    if name in (".", ".."):
        raise errors.BadRequest(f"Invalid profile name \"{name}\"")
    if re.search(r"\s", name):
        raise errors.BadRequest("Profile names may not contain spaces")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME:
        raise errors.BadRequest(f"Profile names may be at most {MAX_NAME} bytes long")


def writable(value):
    """The part of a profile its ETag covers."""
    return [value.get("config", {}), value.get("description", ""), value.get("devices", {})]


def without_unset(config):
    """The config without keys set to "" (unset; `lxc profile unset` sends the key as "")."""
    return {key: value for key, value in config.items() if value != ""}


def validate(config, devices):
    if not isinstance(config, dict) or not all(isinstance(v, str) for v in config.values()):
        raise errors.BadRequest("config must be a map of strings")
    container_config.validate(config, profile=True)
    device.validate(devices)


class Profiles:
    """Profile documents, and the hooks that carry changes to the containers using them."""

    def __init__(self, store, events):
        self._store = store
        self._events = events
        # Until `wire`: a profile no container uses.
        self.change_hooks = []
        self.users = lambda name: []
        self.rename_changes = lambda old, new: []

    def wire(self, users, rename_changes, change_hooks):
        """The daemon's step, once the containers exist.

        `users`: fn(name) -> list of container names using the profile;
        `rename_changes`: fn(old, new) -> store changes that rename the profile in the
        documents using it; `change_hooks`: async fn(name, old_value, new_value) run in
        turn before a change is committed, raising refuses the change (e.g. it would
        break a running container).
        """
        self.users = users
        self.rename_changes = rename_changes
        self.change_hooks = list(change_hooks)

    def get(self, name):
        doc = self._store.get(KIND, name)
        if doc is None:
            raise errors.NotFound()
        return doc

    def names(self):
        return self._store.names(KIND)

    def render(self, name, value):
        return {
            "name": name,
            "description": value.get("description", ""),
            "config": value.get("config", {}),
            "devices": value.get("devices", {}),
            "used_by": [f"/1.0/containers/{c}" for c in self.users(name)],
        }

    async def ensure_default(self):
        if not self._store.exists(KIND, DEFAULT):
            value = {"description": "Default LXD profile", "config": {}, "devices": {}}
            await self._store.commit([Put(KIND, DEFAULT, value, expect=ABSENT)])

    async def create(self, name, description="", config=None, devices=None):
        check_name(name)
        config, devices = config or {}, devices or {}
        if self._store.exists(KIND, name):
            raise errors.BadRequest("The profile already exists")
        validate(config, devices)
        value = {"description": description or "", "config": without_unset(config), "devices": devices}
        await self._store.commit([Put(KIND, name, value, expect=ABSENT)])
        self._events.lifecycle("profile-created", f"/1.0/profiles/{name}")

    async def update(self, name, value, revision):
        """Replace a profile's writable state; `revision` guards against a concurrent change."""
        validate(value["config"], value["devices"])
        value = dict(value, config=without_unset(value["config"]))
        old = self.get(name).value
        for hook in self.change_hooks:
            await hook(name, old, value)
        await self._store.commit([Put(KIND, name, value, expect=revision)])
        self._events.lifecycle("profile-updated", f"/1.0/profiles/{name}")

    async def rename(self, name, new_name):
        check_name(new_name)
        doc = self.get(name)
        if name == DEFAULT:
            raise errors.Forbidden("The \"default\" profile cannot be renamed")
        if self._store.exists(KIND, new_name):
            raise errors.Conflict(f"Name '{new_name}' already in use")
        await self._store.commit([
            Delete(KIND, name, expect=doc.revision),
            Put(KIND, new_name, doc.value, expect=ABSENT),
            *self.rename_changes(name, new_name),
        ])
        self._events.lifecycle("profile-renamed", f"/1.0/profiles/{name}", {"new_name": new_name})

    async def delete(self, name):
        doc = self.get(name)
        if name == DEFAULT:
            raise errors.Forbidden("The \"default\" profile cannot be deleted")
        if self.users(name):
            raise errors.BadRequest("Profile is currently in use")
        await self._store.commit([Delete(KIND, name, expect=doc.revision)])
        self._events.lifecycle("profile-deleted", f"/1.0/profiles/{name}")
