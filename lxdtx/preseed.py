# -*- test-case-name: tests.integration.test_init_preseed -*-
"""`lxdtx init --preseed`: the YAML of `lxd init --preseed`, checked whole, then applied
through the daemon's REST API with every step undone when a later one fails.

The schema is LXD's (`config`, `networks`, `storage_pools`, `profiles`; `cluster` is
refused, there is no clustering). Items that exist are updated as LXD does: their
config (and a profile's devices) merged with the preseed's. The order is networks,
pools, profiles, then the server config: LXD sets the server config first, but a trust
password cannot be read back to undo it, so it goes last, when nothing after it can fail.

This runs in the short-lived `lxdtx` command, so it may block.
"""

import yaml

TOP_KEYS = ("config", "networks", "storage_pools", "profiles", "cluster")
ITEM_KEYS = {
    "networks": ("name", "type", "description", "config", "project"),
    "storage_pools": ("name", "driver", "description", "config"),
    "profiles": ("name", "description", "config", "devices", "project"),
}


class PreseedError(ValueError):
    """A preseed that cannot be applied; the message names the field or the failed step."""


# -- checking ------------------------------------------------------------------
def _config_value(value, field):
    """LXD config values are strings; YAML scalars (15, true) are written as LXD writes them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    if value is None:
        return ""
    raise PreseedError(f"Invalid value for \"{field}\": must be a string")


def _string_map(value, field):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PreseedError(f"Invalid value for \"{field}\": must be a map")
    out = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise PreseedError(f"Invalid key {key!r} in \"{field}\": keys are non-empty strings")
        out[key] = _config_value(item, f"{field}.{key}")
    return out


def _string(value, field, required=False):
    if value is None or value == "":
        if required:
            raise PreseedError(f"Missing \"{field}\"")
        return ""
    if not isinstance(value, str):
        raise PreseedError(f"Invalid value for \"{field}\": must be a string")
    return value


def _item(kind, index, raw):
    where = f"{kind}[{index}]"
    if not isinstance(raw, dict):
        raise PreseedError(f"Invalid value for \"{where}\": must be a map")
    for key in raw:
        if key not in ITEM_KEYS[kind]:
            raise PreseedError(f"Unknown key \"{key}\" in \"{where}\"")
    item = {
        "name": _string(raw.get("name"), f"{where}.name", required=True),
        "description": _string(raw.get("description"), f"{where}.description"),
        "config": _string_map(raw.get("config"), f"{where}.config"),
    }
    if _string(raw.get("project"), f"{where}.project") not in ("", "default"):
        raise PreseedError(f"Invalid value for \"{where}.project\": only the default project exists")
    if kind == "networks":
        item["type"] = _string(raw.get("type"), f"{where}.type") or "bridge"
    elif kind == "storage_pools":
        item["driver"] = _string(raw.get("driver"), f"{where}.driver", required=True)
    else:
        devices = raw.get("devices")
        if devices is not None and not isinstance(devices, dict):
            raise PreseedError(f"Invalid value for \"{where}.devices\": must be a map")
        item["devices"] = {}
        for name, device in (devices or {}).items():
            if not isinstance(name, str) or not name:
                raise PreseedError(f"Invalid device name {name!r} in \"{where}.devices\"")
            config = _string_map(device, f"{where}.devices.{name}")
            if not config.get("type"):
                raise PreseedError(f"Missing \"{where}.devices.{name}.type\"")
            item["devices"][name] = config
    return item


def load(text):
    """The decoded YAML document `text` (not yet checked)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PreseedError(f"Invalid preseed YAML: {e}") from None


def parse(text):
    """The checked preseed of YAML `text`: {config, networks, storage_pools, profiles}."""
    return check(load(text))


def check(raw):
    """The checked form of a decoded preseed document (raises PreseedError naming the field)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PreseedError("Invalid preseed: the document must be a map")
    for key in raw:
        if key not in TOP_KEYS:
            raise PreseedError(f"Unknown preseed key \"{key}\"")
    if raw.get("cluster"):
        raise PreseedError("Invalid value for \"cluster\": clustering is not supported")
    preseed = {"config": _string_map(raw.get("config"), "config")}
    for kind in ITEM_KEYS:
        items = raw.get(kind)
        if items is None:
            items = []
        if not isinstance(items, list):
            raise PreseedError(f"Invalid value for \"{kind}\": must be a list")
        preseed[kind] = [_item(kind, i, item) for i, item in enumerate(items)]
        names = [item["name"] for item in preseed[kind]]
        for name in names:
            if names.count(name) > 1:
                raise PreseedError(f"Invalid value for \"{kind}\": \"{name}\" is given twice")
    return preseed


# -- applying ------------------------------------------------------------------
class Applier:
    """Applies a checked preseed; `call(method, path, body)` returns (status, decoded body)."""

    def __init__(self, call):
        self._call = call
        self._undo = []

    def _request(self, method, path, body, failed):
        status, answer = self._call(method, path, body)
        if status == 202 and isinstance(answer, dict) and answer.get("operation"):
            status, answer = self._call("GET", answer["operation"] + "/wait", None)
            metadata = (answer or {}).get("metadata") or {}
            if status == 200 and metadata.get("status_code") != 200:
                raise PreseedError(f"{failed}: {metadata.get('err') or 'operation failed'}")
        if status >= 400:
            raise PreseedError(f"{failed}: {(answer or {}).get('error') or f'HTTP {status}'}")
        return answer

    def _get(self, path):
        """The metadata at `path`, or None where there is nothing (404)."""
        status, answer = self._call("GET", path, None)
        if status == 404:
            return None
        if status >= 400:
            raise PreseedError(f"Failed to read {path}: {(answer or {}).get('error') or f'HTTP {status}'}")
        return answer.get("metadata")

    def apply(self, preseed):
        """Apply everything or, when a step fails, undo the steps before it and raise."""
        try:
            for network in preseed["networks"]:
                self._network(network)
            for pool in preseed["storage_pools"]:
                self._pool(pool)
            for profile in preseed["profiles"]:
                self._profile(profile)
            if preseed["config"]:
                self._request("PATCH", "/1.0", {"config": preseed["config"]}, "Failed to update the server config")
        except Exception:
            self.rollback()
            raise
        self._undo.clear()

    def rollback(self):
        """Undo what was applied, last first; an undo that fails does not stop the others."""
        failures = []
        while self._undo:
            method, path, body = self._undo.pop()
            try:
                status, answer = self._call(method, path, body)
                if status >= 400:
                    failures.append(f"{method} {path}: {(answer or {}).get('error')}")
            except OSError as e:
                failures.append(f"{method} {path}: {e}")
        return failures

    def _network(self, item):
        path = f"/1.0/networks/{item['name']}"
        current = self._get(path)
        if current is None:
            self._create("/1.0/networks", path, item, ("name", "type", "description", "config"), "network")
            return
        if not current.get("managed"):
            raise PreseedError(f"Network \"{item['name']}\" exists and is not managed by lxdtx")
        if current.get("type") != item["type"]:
            raise PreseedError(f"Network \"{item['name']}\" is of type \"{current.get('type')}\", "
                               f"not \"{item['type']}\"")
        self._update(path, current, item, "network", ("config", "description"))

    def _pool(self, item):
        path = f"/1.0/storage-pools/{item['name']}"
        current = self._get(path)
        if current is None:
            self._create("/1.0/storage-pools", path, item, ("name", "driver", "description", "config"),
                         "storage pool")
            return
        if current.get("driver") != item["driver"]:
            raise PreseedError(f"Storage pool \"{item['name']}\" uses driver \"{current.get('driver')}\", "
                               f"not \"{item['driver']}\"")
        self._update(path, current, item, "storage pool", ("config", "description"))

    def _profile(self, item):
        path = f"/1.0/profiles/{item['name']}"
        current = self._get(path)
        if current is None:
            self._create("/1.0/profiles", path, item, ("name", "description", "config", "devices"), "profile")
            return
        self._update(path, current, item, "profile", ("config", "description", "devices"))

    def _create(self, collection, path, item, keys, what):
        """POST the preseed's `keys` of `item` to `collection`; the undo DELETEs `path`."""
        body = {k: item[k] for k in keys}
        self._request("POST", collection, body, f"Failed to create {what} \"{item['name']}\"")
        self._undo.append(("DELETE", path, None))

    def _update(self, path, current, item, what, fields):
        """PUT the current state with the preseed's keys merged in; the undo PUTs it back."""
        old = {field: current.get(field) or ({} if field != "description" else "") for field in fields}
        new = dict(old)
        for field in fields:
            if field == "description":
                new[field] = item[field] or old[field]
            else:
                new[field] = {**old[field], **item[field]}
        if new == old:
            return
        self._request("PUT", path, new, f"Failed to update {what} \"{item['name']}\"")
        self._undo.append(("PUT", path, old))
