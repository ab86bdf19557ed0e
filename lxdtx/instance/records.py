# -*- test-case-name: tests.unit.test_wiring,tests.integration.test_containers -*-
"""The containers' documents and what is read from them: names, lookups, expanded config
and devices (profiles applied), status, the API's rendering, and which use a profile."""

from lxdtx import errors
from lxdtx.instance import model
from lxdtx.instance.runtime import STATUS_CODES
from lxdtx.state import Put

KIND = model.KIND


class InstanceRecords:
    """The container documents of one daemon's store, and their runtime status."""

    def __init__(self, store, runtime, daemon):
        self._store = store
        self._runtime = runtime
        self._daemon = daemon  # for its cluster membership (the `location` rendered)

    def names(self):
        return self._store.names(KIND)

    def get(self, name):
        doc = self._store.get(KIND, name)
        if doc is None:
            raise errors.NotFound()
        return doc

    def profile_values(self, names):
        values = []
        for name in names:
            value = self._store.value("profile", name)
            if value is None:
                raise errors.BadRequest(f"Profile '{name}' not found")
            values.append(value)
        return values

    def expanded(self, value):
        """(expanded config, expanded devices); profiles that vanished are skipped."""
        profiles = [p for p in (self._store.value("profile", n) for n in value.get("profiles", [])) if p]
        return model.expand(value, profiles)

    def status(self, name):
        return self._runtime.status(name)

    def render(self, name, value, status=None):
        config, devices = self.expanded(value)
        status = status or self.status(name)
        obj = model.render(name, value, config, devices, status, STATUS_CODES[status])
        cluster = getattr(self._daemon, "cluster", None)
        if cluster is not None and cluster.enabled:
            obj["location"] = cluster.location_name(value.get("location", ""))
        return obj

    def profile_users(self, profile):
        return [doc.name for doc in self._store.list(KIND) if profile in doc.value.get("profiles", [])]

    def profile_rename_changes(self, old, new):
        changes = []
        for doc in self._store.list(KIND):
            if old in doc.value.get("profiles", []):
                doc.value["profiles"] = [new if p == old else p for p in doc.value["profiles"]]
                changes.append(Put(KIND, doc.name, doc.value, expect=doc.revision))
        return changes
