"""Managed networks with the real lxc client, real dnsmasq and real busybox containers.

Each module's daemon runs in a network namespace of the test's own (see
`tests.integration.netns`), so bridges, nftables tables, sysctls, dnsmasq and
any traffic stay inside namespaces the tests create and delete.
"""

import os
import signal
import time

import pytest
import yaml

from tests.integration.netns import (  # noqa: F401 (fixtures)
    Netns, alive, container_ipv4, containers, d, daemon_in, free_subnet, in_container, network, ns, ping,
    unique, veth, wait_for,
)

pytestmark = pytest.mark.timeout(300)


def dnsmasq_pid(d, name):
    try:
        with open(os.path.join(d.dir, "networks", name, "dnsmasq.pid")) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if f"--interface={name}".encode() in args else None


def dnsmasq_args(d, name):
    with open(f"/proc/{dnsmasq_pid(d, name)}/cmdline", "rb") as f:
        return [a.decode() for a in f.read().split(b"\0") if a]


def error_of(result):
    assert result.returncode != 0, result.stdout
    return result.stderr.strip()


def wait_ipv4(d, name, subnet, timeout=30):
    import ipaddress

    def found():
        address = container_ipv4(d, name)
        return address if address and ipaddress.ip_address(address) in subnet else None

    return wait_for(found, timeout, what=f"{name} to get an IPv4 address in {subnet} by DHCP")


# -- the API with the lxc client -------------------------------------------------------------------
def test_init_auto_bridge(d, ns):
    """`lxdtx init --auto` made a managed bridge with NAT and put eth0 on it in the default profile."""
    profile = yaml.safe_load(d.lxc("profile", "show", "default").stdout)
    parent = profile["devices"]["eth0"]["parent"]
    assert profile["devices"]["eth0"] == {"type": "nic", "nictype": "bridged", "parent": parent, "name": "eth0"}
    network = yaml.safe_load(d.lxc("network", "show", parent).stdout)
    assert network["managed"] and network["config"]["ipv4.nat"] == "true"
    assert network["config"]["ipv4.address"].endswith(".1/24")
    assert parent in ns.links()


def test_create_list_show_set_edit_rename_delete(d, ns):
    """Every `lxc network` verb, with the kernel side following each step."""
    name, new_name = unique("n", 6), unique("n", 6)
    subnet = free_subnet()
    address = f"{subnet.network_address + 1}/24"
    d.lxc("network", "create", name, f"ipv4.address={address}", "ipv4.nat=true", "ipv6.address=none")
    try:
        rows = d.lxc("network", "list", "--format", "csv").stdout
        assert f"{name},bridge,YES,{address}," in rows
        shown = yaml.safe_load(d.lxc("network", "show", name).stdout)
        assert shown["config"] == {"ipv4.address": address, "ipv4.nat": "true", "ipv6.address": "none"}
        assert shown["type"] == "bridge" and shown["status"] == "Created" and shown["used_by"] == []
        assert address in ns.addresses(name)

        d.lxc("network", "set", name, "dns.domain", "example.test")
        assert d.lxc("network", "get", name, "dns.domain").stdout.strip() == "example.test"
        assert "example.test" in dnsmasq_args(d, name)

        shown["description"] = "edited"
        shown["config"]["bridge.mtu"] = "1400"
        d.lxc("network", "edit", name, input=yaml.safe_dump(shown))
        assert yaml.safe_load(d.lxc("network", "show", name).stdout)["description"] == "edited"
        assert ns.links()[name]["mtu"] == 1400
        assert "--dhcp-option-force=26,1400" in dnsmasq_args(d, name)

        d.lxc("network", "rename", name, new_name)
        links = ns.links()
        assert new_name in links and name not in links
        assert ns.nft_table("inet", f"lxdtx-{name}") is None
        assert "masquerade" in ns.nft_table("inet", f"lxdtx-{new_name}")
        assert dnsmasq_pid(d, new_name) and not os.path.exists(os.path.join(d.dir, "networks", name))
    finally:
        d.lxc("network", "delete", name, check=False)
        pid = dnsmasq_pid(d, new_name)
        d.lxc("network", "delete", new_name, check=False)
    assert new_name not in ns.links() and name not in ns.links()
    assert ns.nft_table("inet", f"lxdtx-{new_name}") is None
    assert pid and not alive(pid)
    assert not os.path.exists(os.path.join(d.dir, "networks", new_name))


def test_rest_shapes(d, ns, network):
    """Managed and unmanaged entries, ETag, PATCH merging, host interfaces listed with their type."""
    name, _ = network()
    listed = d.request("GET", "/1.0/networks").metadata
    assert f"/1.0/networks/{name}" in listed and "/1.0/networks/lo" in listed
    lo = d.request("GET", "/1.0/networks/lo").metadata
    assert lo == {"name": "lo", "description": "", "config": {}, "managed": False, "type": "loopback",
                  "used_by": [], "status": "", "locations": None}
    got = d.request("GET", f"/1.0/networks/{name}")
    etag = got.headers["ETag"]
    stale = d.request("PUT", f"/1.0/networks/{name}", {"config": got.metadata["config"]},
                      headers={"If-Match": "0" * 64})
    assert stale.status == 412
    patched = d.request("PATCH", f"/1.0/networks/{name}", {"config": {"user.note": "x"}},
                        headers={"If-Match": etag})
    assert patched.status == 200, patched
    config = d.request("GET", f"/1.0/networks/{name}").metadata["config"]
    assert config["user.note"] == "x" and config["ipv4.address"] == got.metadata["config"]["ipv4.address"]
    assert d.request("GET", "/1.0/networks/nonexistent0").status == 404
    assert d.request("GET", "/1.0/networks/lo/leases").status == 404
    quiet, _ = network(**{"ipv4.dhcp": "false", "ipv6.address": "none"})
    no_leases = d.request("GET", f"/1.0/networks/{quiet}/leases")
    assert no_leases.status == 400 and no_leases.json["error"] == "No lease file for network"


# -- DHCP, leases, static addresses -----------------------------------------------------------------
def test_container_gets_address_by_dhcp(d, network, containers):
    """A busybox container on the network gets an IPv4 in range within 30 s; lxc list and leases show it."""
    name, subnet = network(**{"ipv4.nat": "true"})
    c = containers("--network", name)
    address = wait_ipv4(d, c, subnet)
    assert address in d.lxc("list", c, "-c", "n4s", "--format", "csv").stdout
    leases = d.request("GET", f"/1.0/networks/{name}/leases").metadata
    hwaddr = d.request("GET", f"/1.0/containers/{c}").metadata["config"]["volatile.eth0.hwaddr"]
    assert {"hostname": c, "hwaddr": hwaddr, "address": address, "type": "dynamic"} in leases
    assert address in d.lxc("network", "list-leases", name).stdout
    used_by = d.request("GET", f"/1.0/networks/{name}").metadata["used_by"]
    assert used_by == [f"/1.0/containers/{c}"]


def test_static_address_and_leases(d, network, containers):
    """`ipv4.address` on the nic gives exactly that address; the leases endpoint calls it static."""
    name, subnet = network()
    wanted = str(subnet.network_address + 77)
    c = containers("--network", name, start=False)
    d.lxc("config", "device", "set", c, "eth0", "ipv4.address", wanted)
    hosts = os.path.join(d.dir, "networks", name, "dnsmasq.hosts", c)
    with open(hosts) as f:
        assert f",{wanted},{c}" in f.read()  # written with the change, before any start
    d.lxc("start", c)
    assert wait_ipv4(d, c, subnet) == wanted
    hwaddr = d.request("GET", f"/1.0/containers/{c}").metadata["config"]["volatile.eth0.hwaddr"]
    leases = d.request("GET", f"/1.0/networks/{name}/leases").metadata
    assert leases[0] == {"hostname": c, "hwaddr": hwaddr, "address": wanted, "type": "static"}
    assert [lease for lease in leases if lease["address"] == wanted] == [leases[0]]
    with open(hosts) as f:
        assert f.read() == f"{hwaddr},{wanted},{c}\n"
    # A nic plugged in later adds its entry and keeps the first one's.
    d.lxc("config", "device", "add", c, "eth1", "nic", "nictype=bridged", f"parent={name}")
    second = d.request("GET", f"/1.0/containers/{c}").metadata["config"]["volatile.eth1.hwaddr"]
    with open(hosts) as f:
        assert f.read() == f"{hwaddr},{wanted},{c}\n{second},{c}\n"
    d.lxc("delete", "--force", c)
    assert not os.path.exists(hosts)  # the address is free for others again


def test_dhcp_expiry_reaches_dnsmasq(d, network, containers):
    """`ipv4.dhcp.expiry` changes dnsmasq's range and the lease it hands out."""
    name, subnet = network(**{"ipv4.dhcp.expiry": "2h"})
    args = dnsmasq_args(d, name)
    assert f"{subnet.network_address + 2},{subnet.network_address + 254},2h" in args
    c = containers("--network", name)
    address = wait_ipv4(d, c, subnet)
    with open(os.path.join(d.dir, "networks", name, "dnsmasq.leases")) as f:
        expiry = [int(line.split()[0]) for line in f if address in line.split()]
    assert expiry and 7000 < expiry[0] - time.time() <= 7201
    d.lxc("network", "set", name, "ipv4.dhcp.expiry", "45m")
    assert f"{subnet.network_address + 2},{subnet.network_address + 254},45m" in dnsmasq_args(d, name)


def test_dhcp_ranges_and_gateway(d, network):
    """`ipv4.dhcp.ranges` and `ipv4.dhcp.gateway` (network_dhcp_gateway) reach dnsmasq."""
    subnet = free_subnet()
    first, last, gateway = subnet.network_address + 100, subnet.network_address + 120, subnet.network_address + 9
    name, subnet = network(**{"ipv4.address": f"{subnet.network_address + 1}/24",
                              "ipv4.dhcp.ranges": f"{first}-{last}", "ipv4.dhcp.gateway": str(gateway)})
    args = dnsmasq_args(d, name)
    assert f"{first},{last},1h" in args and f"--dhcp-option-force=3,{gateway}" in args


# -- NAT, firewall, routes ------------------------------------------------------------------------
def test_nat_rule_follows_ipv4_nat(d, ns, network):
    """The masquerade rule for the subnet exists exactly while ipv4.nat is true."""
    name, subnet = network(**{"ipv4.nat": "true", "ipv6.address": "none"})
    rule = f"ip saddr {subnet} ip daddr != {subnet} masquerade"
    assert rule in ns.nft_table("inet", f"lxdtx-{name}")
    index, pid = ns.links()[name]["ifindex"], dnsmasq_pid(d, name)
    d.lxc("network", "set", name, "ipv4.nat", "false")
    assert "masquerade" not in ns.nft_table("inet", f"lxdtx-{name}")
    # A live change touches only what it must: same bridge, same dnsmasq.
    assert (ns.links()[name]["ifindex"], dnsmasq_pid(d, name)) == (index, pid)
    d.lxc("network", "set", name, "ipv4.nat", "true")
    assert rule in ns.nft_table("inet", f"lxdtx-{name}")
    assert ns.exec("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"


def test_firewall_false_removes_forward_rules_only(d, ns, network):
    """`ipv4.firewall=false`: no IPv4 forward rules; NAT and DHCP/DNS rules stay; IPv6 untouched."""
    name, subnet = network(**{"ipv4.nat": "true", "ipv6.address": "fd42:1:2:3::1/64"})
    table = ns.nft_table("inet", f"lxdtx-{name}")
    assert f'iifname "{name}" meta nfproto ipv4 accept' in table
    d.lxc("network", "set", name, "ipv4.firewall", "false")
    table = ns.nft_table("inet", f"lxdtx-{name}")
    assert "meta nfproto ipv4 accept" not in table
    assert f'iifname "{name}" meta nfproto ipv6 accept' in table
    assert f"ip saddr {subnet} ip daddr != {subnet} masquerade" in table
    assert f'iifname "{name}" meta nfproto ipv4 udp dport {{ 53, 67 }} accept' in table
    d.lxc("network", "set", name, "ipv4.routing", "false")
    d.lxc("network", "set", name, "ipv4.firewall", "true")
    assert f'iifname "{name}" meta nfproto ipv4 drop' in ns.nft_table("inet", f"lxdtx-{name}")


def test_routes(d, ns, network):
    """`ipv4.routes`/`ipv6.routes` (network_routes) install routes on the bridge and follow changes."""
    name, _ = network(**{"ipv6.address": "fd42:4:5:6::1/64"})
    one, two = free_subnet(), free_subnet()
    d.lxc("network", "set", name, "ipv4.routes", f"{one},{two}")
    d.lxc("network", "set", name, "ipv6.routes", "fd42:99::/64")

    def routes(*family):
        return ns.ip(*family, "route", "show", "dev", name, "proto", "static").stdout

    assert str(one) in routes("-4") and str(two) in routes("-4") and "fd42:99::/64" in routes("-6")
    d.lxc("network", "set", name, "ipv4.routes", str(two))
    assert str(one) not in routes("-4") and str(two) in routes("-4")
    d.lxc("network", "unset", name, "ipv4.routes")
    assert routes("-4").strip() == ""


def test_bridge_settings_and_external_interfaces(d, ns, network):
    """bridge.hwaddr, bridge.mtu and bridge.external_interfaces (unconfigured ports only)."""
    name, _ = network(**{"bridge.hwaddr": "00:16:3e:aa:bb:cc", "bridge.mtu": "1450"})
    link = ns.links()[name]
    assert link["address"] == "00:16:3e:aa:bb:cc" and link["mtu"] == 1450
    port = unique("tpo", 6)
    veth(ns, port)
    try:
        d.lxc("network", "set", name, "bridge.external_interfaces", port)
        assert ns.links()[port].get("master") == name
        d.lxc("network", "unset", name, "bridge.external_interfaces")
        assert "master" not in ns.links()[port]
        ns.ip("addr", "add", "192.0.2.55/32", "dev", port)
        message = error_of(d.lxc("network", "set", name, "bridge.external_interfaces", port, check=False))
        assert "Only unconfigured network interfaces can be bridged" in message
        assert "master" not in ns.links()[port]
        assert "bridge.external_interfaces" not in d.request("GET", f"/1.0/networks/{name}").metadata["config"]
    finally:
        ns.ip("link", "del", port, check=False)


def test_raw_dnsmasq_and_dns_mode(d, ns, network):
    """raw.dnsmasq lands in dnsmasq's config file (restarting it); dns.mode none drops the domain."""
    name, _ = network()
    before = dnsmasq_pid(d, name)
    d.lxc("network", "set", name, "raw.dnsmasq", "dhcp-option=42,192.0.2.123")
    with open(os.path.join(d.dir, "networks", name, "dnsmasq.raw")) as f:
        assert f.read() == "dhcp-option=42,192.0.2.123\n"
    assert dnsmasq_pid(d, name) not in (None, before)
    assert "-s" in dnsmasq_args(d, name)
    d.lxc("network", "set", name, "dns.mode", "none")
    assert "-s" not in dnsmasq_args(d, name)


def test_ipv6_slaac(d, network, containers):
    """With an IPv6 subnet, dnsmasq's router advertisements give the container an address in it."""
    name, _ = network(**{"ipv6.address": "fd42:77:88:99::1/64", "ipv6.nat": "true"})
    c = containers("--network", name)

    def address():
        state = d.request("GET", f"/1.0/containers/{c}/state").metadata
        return [a["address"] for a in state["network"]["eth0"]["addresses"]
                if a["family"] == "inet6" and a["address"].startswith("fd42:77:88:99:")]

    wait_for(address, 30, what="an IPv6 address from router advertisements")
    args = dnsmasq_args(d, name)
    assert "--enable-ra" in args and f"::,constructor:{name},ra-stateless,ra-names" in args
    d.lxc("network", "set", name, "ipv6.dhcp.stateful", "true")
    assert "fd42:77:88:99::2,fd42:77:88:99:ffff:ffff:ffff:ffff,64,1h" in dnsmasq_args(d, name)


# -- supervision, restart, deletion ---------------------------------------------------------------------
def test_killed_dnsmasq_comes_back(d, network):
    """dnsmasq killed behind the daemon's back is restarted, with a warning in the log and the events."""
    from tests.integration.test_events import Monitor

    name, _ = network()
    pid = dnsmasq_pid(d, name)
    monitor = Monitor(d, "logging")
    try:
        time.sleep(0.5)  # the monitor's websocket is up
        os.kill(pid, signal.SIGKILL)
        new = wait_for(lambda: (dnsmasq_pid(d, name) or 0) not in (0, pid) and dnsmasq_pid(d, name), 15,
                       what="dnsmasq to be restarted")
        assert new != pid
        assert f"of network {name} exited" in d.log()
        warnings = [e for e in monitor.read(3) if e["metadata"].get("level") == "warn"
                    and f"of network {name} exited" in e["metadata"]["message"]]
        assert warnings, monitor.events
    finally:
        monitor.close()


def test_daemon_restart_keeps_addresses(d, ns, network, containers):
    """SIGTERM leaves the network up; the restarted daemon adopts it: same link, same container address."""
    name, subnet = network()
    c = containers("--network", name)
    address = wait_ipv4(d, c, subnet)
    index = ns.links()[name]["ifindex"]
    old_pid = dnsmasq_pid(d, name)
    d.stop()
    assert dnsmasq_pid(d, name) == old_pid  # DHCP keeps serving while the daemon is away
    d.start()
    assert ns.links()[name]["ifindex"] == index
    new_pid = dnsmasq_pid(d, name)
    assert new_pid and new_pid != old_pid and not alive(old_pid)
    assert container_ipv4(d, c) == address
    leases = d.request("GET", f"/1.0/networks/{name}/leases").metadata
    assert any(lease["address"] == address for lease in leases)
    # A renewal after the restart still hands out the same address.
    in_container(d, c, "ip", "-4", "addr", "flush", "dev", "eth0")
    d.lxc("restart", c, "--force")
    assert wait_ipv4(d, c, subnet) == address


def test_delete_in_use_then_leaves_nothing(d, ns, containers):
    """Deleting a network in use is refused; once unused, no link, rule, process or file remains."""
    name = unique("n", 6)
    subnet = free_subnet()
    d.lxc("network", "create", name, f"ipv4.address={subnet.network_address + 1}/24", "ipv4.nat=true",
          "tunnel.t.protocol=vxlan", "tunnel.t.id=9", "tunnel.t.local=127.0.0.1", "tunnel.t.remote=127.0.0.2")
    c = containers("--network", name, start=False)
    assert "The network is currently in use" in error_of(d.lxc("network", "delete", name, check=False))
    assert "The network is currently in use" in error_of(d.lxc("network", "rename", name, "other0", check=False))
    d.lxc("delete", c)
    pid = dnsmasq_pid(d, name)
    assert f"{name}-t" in ns.links()
    d.lxc("network", "delete", name)
    links = ns.links()
    assert name not in links and f"{name}-t" not in links
    assert ns.nft_table("inet", f"lxdtx-{name}") is None
    assert not alive(pid)
    assert not os.path.exists(os.path.join(d.dir, "networks", name))


# -- bad input -----------------------------------------------------------------------------------------
def test_bad_input(d, ns, network):
    """Overlapping subnets, bad CIDRs, unknown keys, bad names and values: a 400 naming the key, no change."""
    name, subnet = network()
    other = unique("n", 6)
    cases = {
        f"ipv4.address={subnet.network_address + 5}/24": "overlaps",
        "ipv4.address=10.1.2.300/24": 'network configuration key "ipv4.address"',
        "ipv4.address=10.1.2.0/24": "Not a usable IPv4 address",
        "ipv6.address=fd42::1": 'key "ipv6.address"',
        "colour=blue": "Invalid network configuration key: colour",
        "ipv4.nat=perhaps": 'key "ipv4.nat"',
        "ipv4.routes=10.9.9.9": 'key "ipv4.routes"',
        "ipv4.dhcp.ranges=10.1.1.9": 'key "ipv4.dhcp.ranges"',
        "ipv4.dhcp.expiry=soon": 'key "ipv4.dhcp.expiry"',
        "tunnel.t.protocol=ipip": 'key "tunnel.t.protocol"',
        "tunnel.t.colour=red": "Invalid network configuration key: tunnel.t.colour",
        "bridge.mtu=1000": "The minimum MTU for an IPv6 network is 1280",
        "bridge.driver=openvswitch": "Open vSwitch isn't installed",
        "bridge.mode=fan": "fan",
    }
    before_links = set(ns.links())
    before_tables = ns.nft_tables()
    for setting, message in cases.items():
        args = [setting] if "mtu" not in setting else [setting, "ipv6.address=fd42:1::1/64"]
        if setting == "bridge.mode=fan":
            args = [setting, "ipv4.address=none", "ipv6.address=none"]
        result = d.lxc("network", "create", other, *args, check=False)
        assert message in error_of(result), (setting, result.stderr)
        assert d.request("GET", f"/1.0/networks/{other}").status == 404
    assert set(ns.links()) == before_links and ns.nft_tables() == before_tables
    assert not os.path.exists(os.path.join(d.dir, "networks", other))

    for bad in ("a", "x" * 16, "no/slash", "sp ace"):
        result = d.request("POST", "/1.0/networks", {"name": bad, "config": {}})
        assert result.status == 400, (bad, result)
    result = d.request("POST", "/1.0/networks", {"name": name, "config": {}})
    assert result.status == 400 and "already exists" in result.json["error"]
    result = d.request("POST", "/1.0/networks", {"name": "lo", "config": {}})
    assert result.status == 400 and "already exists" in result.json["error"]
    result = d.request("POST", "/1.0/networks", {"name": other, "type": "macvlan", "config": {}})
    assert result.status == 400
    for config in ({"bridge.driver": "openvswitch"}, {"bridge.mode": "fan"},
                   {"ipv4.address": "none", "ipv6.address": "none", "tunnel.t.protocol": "vxlan"}):
        result = d.request("POST", "/1.0/networks", {"name": other, "config": config})
        assert result.status == 400, (config, result)
    assert set(ns.links()) == before_links and ns.nft_tables() == before_tables
    assert "overlaps" in error_of(d.lxc("network", "set", name, "ipv4.address",
                                        d.lxc("network", "get", d_default(d), "ipv4.address").stdout.strip(),
                                        check=False))
    assert d.request("POST", f"/1.0/networks/{name}", {"name": d_default(d)}).status == 409
    config = d.request("GET", f"/1.0/networks/{name}").metadata["config"]
    assert config["ipv4.address"] == f"{subnet.network_address + 1}/24"


def d_default(d):
    return yaml.safe_load(d.lxc("profile", "show", "default").stdout)["devices"]["eth0"]["parent"]


def test_failed_create_rolls_back(d, ns):
    """A create that fails after the bridge exists (port with an address) leaves nothing behind."""
    name, port = unique("n", 6), unique("tpo", 6)
    veth(ns, port)
    try:
        ns.ip("addr", "add", "192.0.2.56/32", "dev", port)
        result = d.lxc("network", "create", name, f"bridge.external_interfaces={port}", check=False)
        assert "Only unconfigured network interfaces can be bridged" in error_of(result)
        assert name not in ns.links() and ns.nft_table("inet", f"lxdtx-{name}") is None
        assert dnsmasq_pid(d, name) is None
        assert not os.path.exists(os.path.join(d.dir, "networks", name))
        assert d.request("GET", f"/1.0/networks/{name}").status == 404
    finally:
        ns.ip("link", "del", port, check=False)


def test_pylxd(d, network):
    """pylxd sees networks and can create, update and delete one."""
    import pylxd

    client = pylxd.Client(endpoint=d.socket_path)
    name, _ = network()
    assert client.networks.exists(name)
    net = client.networks.get(name)
    assert net.managed and net.type == "bridge"
    other = unique("n", 6)
    created = client.networks.create(other, description="py", config={"ipv4.address": "none",
                                                                        "ipv6.address": "none"})
    try:
        created.description = "changed"
        created.save()
        assert client.networks.get(other).description == "changed"
    finally:
        created.delete()
    assert not client.networks.exists(other)


# -- tunnels ----------------------------------------------------------------------------------------------
@pytest.fixture
def two_sites():
    """Two namespaces joined by a veth (192.168.77.1 / .2), a daemon in each."""
    a, b = Netns(), Netns()
    daemons = []
    try:
        peer = veth(a, "uplink", b, "uplink")
        a.ip("addr", "add", "192.168.77.1/24", "dev", "uplink")
        a.ip("link", "set", "uplink", "up")
        b.ip("addr", "add", "192.168.77.2/24", "dev", peer)
        b.ip("link", "set", peer, "up")
        for ns in (a, b):
            daemons.append(daemon_in(ns))
        yield (a, daemons[0]), (b, daemons[1])
    finally:
        for daemon in daemons:
            daemon.cleanup()
        a.delete()
        b.delete()


@pytest.mark.parametrize("mode", ["unicast", "multicast"])
def test_vxlan_tunnel_passes_traffic(two_sites, mode):
    """Two networks joined by a vxlan tunnel (unicast local/remote, or a multicast group on an interface)."""
    (a, da), (b, db) = two_sites
    for index, (ns, daemon, local, remote) in enumerate(((a, da, "192.168.77.1", "192.168.77.2"),
                                                         (b, db, "192.168.77.2", "192.168.77.1"))):
        tunnel = ["tunnel.site.protocol=vxlan", "tunnel.site.id=77"]
        if mode == "unicast":
            tunnel += [f"tunnel.site.local={local}", f"tunnel.site.remote={remote}"]
        else:
            tunnel += ["tunnel.site.group=239.0.0.77", "tunnel.site.interface=uplink"]
        daemon.lxc("network", "create", "vx", f"ipv4.address=10.200.0.{index + 1}/24", "ipv6.address=none",
                   "ipv4.dhcp=false", *tunnel)
        link = ns.links()["vx-site"]
        assert link["linkinfo"]["info_kind"] == "vxlan" and link["master"] == "vx" and link["mtu"] == 1400
    wait_for(lambda: ping(a, "10.200.0.2"), 20, what="a ping through the tunnel")
    assert ping(b, "10.200.0.1", count=2)


def test_gre_tunnel(two_sites):
    """GRE tunnels (gretap) need the kernel's ip_gre; where it is missing the error says so."""
    (a, da), _ = two_sites
    result = da.lxc("network", "create", "gr", "ipv4.address=10.201.0.1/24", "ipv6.address=none",
                    "tunnel.g.protocol=gre", "tunnel.g.local=192.168.77.1", "tunnel.g.remote=192.168.77.2",
                    check=False)
    if result.returncode != 0:
        assert "gretap" in result.stderr
        assert "gr" not in a.links() and "gr-g" not in a.links()
        pytest.skip("the kernel has no GRE tap support (CONFIG_NET_IPGRE)")
    assert a.links()["gr-g"]["linkinfo"]["info_kind"] == "gretap"


def test_dns_port_taken():
    """Another DNS server holding port 53 on every address: dnsmasq's complaint, and nothing left behind."""
    import subprocess

    ns = Netns()
    holder = None
    try:
        d = daemon_in(ns)
        holder = subprocess.Popen(["ip", "netns", "exec", ns.name, "python3", "-c",
                                   "import socket, time\n"
                                   "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                                   "s.bind(('0.0.0.0', 53))\n"
                                   "print('bound', flush=True)\n"
                                   "time.sleep(120)\n"], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "bound"
            name = unique("n", 6)
            result = d.lxc("network", "create", name, "ipv6.address=none", check=False)
            assert "Address already in use" in error_of(result)
            assert name not in ns.links() and ns.nft_table("inet", f"lxdtx-{name}") is None
            assert not os.path.exists(os.path.join(d.dir, "networks", name))
            assert dnsmasq_pid(d, name) is None
        finally:
            d.cleanup()
    finally:
        if holder is not None:
            holder.kill()
            holder.wait(10)
        ns.delete()
