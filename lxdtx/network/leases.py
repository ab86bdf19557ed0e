# -*- test-case-name: tests.unit.test_network_leases -*-
"""`GET /1.0/networks/NAME/leases`: static addresses of nics, then dnsmasq's dynamic leases.

dnsmasq's lease file has one lease per line:

    IPv4:  EXPIRY HWADDR ADDRESS HOSTNAME CLIENT-ID
    IPv6:  EXPIRY IAID ADDRESS HOSTNAME DUID      (after a `duid SERVER-DUID` line)

An IPv6 lease names no MAC; it is read from the client's DUID when that is of
the link-layer kinds (DUID-LLT, DUID-LL) over ethernet.
"""


def static(container, hwaddr, ipv4, ipv6):
    """The static leases of one nic (`ipv4.address` / `ipv6.address` keys)."""
    found = []
    for address in (ipv4, ipv6):
        if address:
            found.append({"hostname": container, "hwaddr": hwaddr, "address": address, "type": "static"})
    return found


def mac_from_duid(duid):
    """The MAC in a DUID-LLT/DUID-LL over ethernet (`00:01:00:01:...`), or ""."""
    parts = duid.lower().split(":")
    if len(parts) < 4:
        return ""
    kind, hwtype = parts[0] + parts[1], parts[2] + parts[3]
    if hwtype != "0001":
        return ""
    if kind == "0001" and len(parts) == 14:
        return ":".join(parts[8:])
    if kind == "0003" and len(parts) == 10:
        return ":".join(parts[4:])
    return ""


def dynamic(text):
    """The leases in a dnsmasq lease file's text."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[0] == "duid":
            continue
        _, who, address, hostname, client = fields[:5]
        hwaddr = who if ":" in who else mac_from_duid(client)
        found.append({"hostname": "" if hostname == "*" else hostname, "hwaddr": hwaddr,
                      "address": address, "type": "dynamic"})
    return found


def merge(statics, text):
    """Static leases first, then dynamic ones for addresses no static entry claims."""
    claimed = {lease["address"] for lease in statics}
    return statics + [lease for lease in dynamic(text) if lease["address"] not in claimed]
