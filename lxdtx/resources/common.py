# -*- test-case-name: tests.integration.test_bad_input -*-
"""Pieces every resource module shares: typed request fields and container endpoints."""

from lxdtx import errors
from lxdtx.router import Endpoint


def string(body, key):
    """`body[key]` as a string ("" when absent or null); 400 naming the field otherwise."""
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise errors.BadRequest(f"Invalid value for \"{key}\": must be a string")
    return value


def mapping(body, key):
    """`body[key]` as a map ({} when absent or null); 400 naming the field otherwise."""
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errors.BadRequest(f"Invalid value for \"{key}\": must be a map")
    return value


def string_list(body, key, default=None):
    """`body[key]` as a list of strings (`default` when absent or null); 400 naming the field otherwise."""
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise errors.BadRequest(f"Invalid value for \"{key}\": must be a list of names")
    return value


def container_endpoint(path, **actions):
    """An endpoint under `/1.0/containers/...`, also served as `/1.0/instances/...` (pylxd 2.4)."""
    return Endpoint(path, aliases=(path.replace("/1.0/containers", "/1.0/instances", 1),), **actions)

