# -*- test-case-name: tests.unit.test_devlxd -*-
"""What a guest is told about its own container: config keys, meta-data, change events.

Pure functions over expanded configs and devices, shared by the guest API and the
hooks that report a running container's changes.
"""

# Device keys whose change alone is an update of the device, not a remove and add.
UPDATABLE_DEVICE_KEYS = frozenset({
    "limits.max", "limits.read", "limits.write", "limits.ingress", "limits.egress",
    "ipv4.address", "ipv6.address",
})
EVENT_TYPES = ("config", "device")


def user_keys(config):
    """The `user.*` keys of an expanded config, sorted."""
    return sorted(key for key in config if key.startswith("user."))


def meta_data(name, config):
    """The cloud-init meta-data text of container `name` (`user.meta-data` appended as is)."""
    return f"#cloud-config\ninstance-id: {name}\nlocal-hostname: {name}\n{config.get('user.meta-data', '')}"


def config_events(old, new):
    """[metadata] of one `config` event per `user.*` key that differs between two configs."""
    events = []
    for key in sorted(set(user_keys(old)) | set(user_keys(new))):
        before, after = old.get(key, ""), new.get(key, "")
        if before != after:
            events.append({"key": key, "old_value": before, "value": after})
    return events


def _updated_only(old, new):
    changed = {key for key in set(old) | set(new) if old.get(key) != new.get(key)}
    return bool(changed) and changed <= UPDATABLE_DEVICE_KEYS


def device_events(old, new):
    """[metadata] of the `device` events between two device sets: removals, updates, additions.

    A device whose only changes are among UPDATABLE_DEVICE_KEYS is `updated`; any other
    change is a removal (old config) followed by an addition (new config).
    """
    removed, updated, added = [], [], []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if before is not None and after is not None and _updated_only(before, after):
            updated.append({"action": "updated", "name": name, "config": after})
            continue
        if before is not None:
            removed.append({"action": "removed", "name": name, "config": before})
        if after is not None:
            added.append({"action": "added", "name": name, "config": after})
    return removed + updated + added


def parse_types(raw):
    """The event types a `type=` query asks for (default: all); unknown names match nothing,
    as in the reference."""
    types = frozenset(t.strip() for t in raw.split(",") if t.strip())
    return types or frozenset(EVENT_TYPES)
