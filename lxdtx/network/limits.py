# -*- test-case-name: tests.unit.test_network_limits -*-
"""`limits.ingress`, `limits.egress`, `limits.max` of a nic, as tc rules on its host end.

Directions are the container's: ingress (traffic to the container) leaves the
host end, so an htb class on its root qdisc shapes it; egress (traffic from the
container) enters the host end and is policed on its ingress qdisc, as the
reference does. Policing needs the kernel's `act_police` (CONFIG_NET_ACT_POLICE).
"""

from lxdtx.asyncutil import ProcessError, run
from lxdtx.config.types import parse_bit_rate

TC = "tc"


class LimitError(Exception):
    """tc refused a rule."""


def rates(config):
    """(ingress bits/s or None, egress bits/s or None) from a nic's keys."""
    ingress = config.get("limits.ingress") or config.get("limits.max") or ""
    egress = config.get("limits.egress") or config.get("limits.max") or ""
    return (parse_bit_rate(ingress) if ingress else None, parse_bit_rate(egress) if egress else None)


def clear_commands(host_name):
    """Remove what an earlier setting left (failures are expected and ignored)."""
    return [[TC, "qdisc", "del", "dev", host_name, "root"],
            [TC, "qdisc", "del", "dev", host_name, "ingress"]]


def commands(host_name, config):
    """The tc invocations that apply a nic's limits (after `clear_commands`)."""
    ingress, egress = rates(config)
    found = []
    if ingress:
        found += [
            [TC, "qdisc", "add", "dev", host_name, "root", "handle", "1:0", "htb", "default", "10"],
            [TC, "class", "add", "dev", host_name, "parent", "1:0", "classid", "1:10", "htb",
             "rate", f"{ingress}bit"],
        ]
    if egress:
        found += [
            [TC, "qdisc", "add", "dev", host_name, "ingress", "handle", "ffff:0"],
            [TC, "filter", "add", "dev", host_name, "parent", "ffff:0", "protocol", "all", "u32",
             "match", "u32", "0", "0", "police", "rate", f"{egress}bit", "burst", "1024k",
             "mtu", "64kb", "drop", "flowid", ":1"],
        ]
    return found


def has_limits(config):
    return any(config.get(key) for key in ("limits.ingress", "limits.egress", "limits.max"))


async def apply(host_name, config):
    """Replace the limits on `host_name` with those of `config` (none: just clear)."""
    for argv in clear_commands(host_name):
        await run(argv, check=False)
    for argv in commands(host_name, config):
        try:
            await run(argv)
        except ProcessError as e:
            detail = e.stderr.decode("utf-8", "replace").strip()
            if "police" in argv and ("action" in detail.lower() or "police" in detail.lower()):
                detail += " (the kernel lacks act_police, CONFIG_NET_ACT_POLICE, needed for limits.egress)"
            raise LimitError(f"Failed to set network limits on {host_name}: {detail}") from None
