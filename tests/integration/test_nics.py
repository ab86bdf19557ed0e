"""Container nics on real busybox containers: every nictype this kernel can run, hot plug, limits, filtering.

Parents are veth pairs the tests create inside the daemon's namespace, with their
other end in a second namespace of the test's own; traffic is link-local IPv6
(it needs no DHCP and survives the container's DHCP client flushing IPv4).
"""

import json
import os

import pytest

from tests.integration.netns import (  # noqa: F401 (fixtures)
    Netns, container_ipv4, containers, d, in_container, kernel_config, network, ns, unique, veth, wait_for,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def peer(ns):
    """A second namespace and a veth pair: (name in the daemon's namespace, peer namespace, peer name)."""
    other = Netns()
    name = unique("tpa", 6)
    try:
        peer_name = veth(ns, name, other, unique("tpb", 6))
        ns.ip("link", "set", name, "up")
        other.ip("link", "set", peer_name, "up")
        yield name, other, peer_name
    finally:
        ns.ip("link", "del", name, check=False)
        other.delete()


def config(d, c):
    return d.request("GET", f"/1.0/containers/{c}").metadata["config"]


def container_links(d, c):
    out = in_container(d, c, "ip", "-j", "-d", "link", "show").stdout
    return {link["ifname"]: link for link in json.loads(out)}


def link_local(d, c, ifname):
    """The container interface's link-local IPv6 address, once DAD is done."""
    def found():
        out = in_container(d, c, "ip", "-j", "-6", "addr", "show", "dev", ifname, "scope", "link").stdout
        for link in json.loads(out):
            for address in link.get("addr_info", []):
                if not address.get("tentative"):
                    return address["local"]
        return None

    return wait_for(found, 15, what=f"a link-local address on {ifname}")


def reaches(ns, address, via):
    """A link-local ping from namespace `ns` out of interface `via`."""
    return wait_for(lambda: ns.exec("busybox", "ping6", "-c", "1", "-W", "1", f"{address}%{via}",
                                    check=False).returncode == 0, 15, what=f"{address} to answer on {via}")


def error_of(result):
    assert result.returncode != 0, result.stdout
    return result.stderr.strip()


def test_macvlan(d, ns, peer, containers):
    """macvlan on a host interface: the container's MAC and traffic; used_by of the unmanaged parent."""
    parent, other, peer_name = peer
    c = containers(start=False)
    d.lxc("config", "device", "add", c, "mv", "nic", "nictype=macvlan", f"parent={parent}", "name=eth1")
    d.lxc("start", c)
    hwaddr = config(d, c)["volatile.mv.hwaddr"]
    link = container_links(d, c)["eth1"]
    assert link["linkinfo"]["info_kind"] == "macvlan" and link["address"] == hwaddr
    reaches(other, link_local(d, c, "eth1"), peer_name)
    assert d.request("GET", f"/1.0/networks/{parent}").metadata["used_by"] == [f"/1.0/containers/{c}"]


def test_p2p_with_limits(d, ns, containers):
    """p2p: a veth whose host end stays unattached, with limits.ingress shaping it (htb)."""
    c = containers(start=False)
    d.lxc("config", "device", "add", c, "pp", "nic", "nictype=p2p", "name=eth1", "limits.ingress=10Mbit")
    d.lxc("start", c)
    host = config(d, c)["volatile.pp.host_name"]
    link = ns.links()[host]
    assert "master" not in link and link["linkinfo"]["info_kind"] == "veth"
    ns.ip("link", "set", host, "up")
    reaches(ns, link_local(d, c, "eth1"), host)
    assert "rate 10Mbit" in ns.exec("tc", "class", "show", "dev", host).stdout
    d.lxc("config", "device", "set", c, "pp", "limits.ingress", "20Mbit")
    assert "rate 20Mbit" in ns.exec("tc", "class", "show", "dev", host).stdout
    d.lxc("config", "device", "unset", c, "pp", "limits.ingress")
    assert "htb" not in ns.exec("tc", "qdisc", "show", "dev", host).stdout
    d.lxc("stop", c, "--force")
    assert host not in ns.links()


def test_egress_limit(d, ns, containers):
    """limits.egress polices what the container sends (needs the kernel's act_police)."""
    c = containers(start=False)
    d.lxc("config", "device", "add", c, "pp", "nic", "nictype=p2p", "name=eth1", "limits.egress=5Mbit")
    result = d.lxc("start", c, check=False)
    if kernel_config("NET_ACT_POLICE") is False:
        assert "act_police" in error_of(result)
        assert d.request("GET", f"/1.0/containers/{c}").metadata["status"] == "Stopped"
        pytest.skip("the kernel lacks act_police (CONFIG_NET_ACT_POLICE) for limits.egress")
    assert result.returncode == 0, result.stderr
    host = config(d, c)["volatile.pp.host_name"]
    assert "rate 5Mbit" in ns.exec("tc", "filter", "show", "dev", host, "ingress").stdout


def test_physical(d, ns, peer, containers):
    """physical: the host interface moves into the container under its name and comes back at stop."""
    parent, other, peer_name = peer
    original = ns.links()[parent]["address"]
    c = containers(start=False)
    d.lxc("config", "device", "add", c, "ph", "nic", "nictype=physical", f"parent={parent}", "name=eth2",
          "mtu=1400")
    d.lxc("start", c)
    assert parent not in ns.links()
    link = container_links(d, c)["eth2"]
    assert link["address"] == original and link["mtu"] == 1400
    reaches(other, link_local(d, c, "eth2"), peer_name)
    d.lxc("stop", c, "--force")
    back = wait_for(lambda: ns.links().get(parent), 10, what=f"{parent} to come back")
    assert back["address"] == original and back["mtu"] == 1500


def test_hot_plug(d, ns, peer, network, containers):
    """Nics added to and removed from a running container: bridged, macvlan, physical, via a profile too."""
    name, subnet = network()
    parent, other, peer_name = peer
    c = containers()
    d.lxc("config", "device", "add", c, "eth1", "nic", "nictype=bridged", f"parent={name}")
    cfg = config(d, c)
    host, hwaddr, ifname = cfg["volatile.eth1.host_name"], cfg["volatile.eth1.hwaddr"], cfg["volatile.eth1.name"]
    assert ifname == "eth1" and ns.links()[host]["master"] == name
    link = container_links(d, c)["eth1"]
    assert link["address"] == hwaddr and "UP" in link["flags"]
    assert d.request("GET", f"/1.0/networks/{name}").metadata["used_by"] == [f"/1.0/containers/{c}"]
    d.lxc("config", "device", "remove", c, "eth1")
    assert host not in ns.links() and "eth1" not in container_links(d, c)

    d.lxc("config", "device", "add", c, "mv", "nic", "nictype=macvlan", f"parent={parent}", "name=mv0")
    reaches(other, link_local(d, c, "mv0"), peer_name)
    d.lxc("config", "device", "remove", c, "mv")
    assert "mv0" not in container_links(d, c)

    d.lxc("config", "device", "add", c, "ph", "nic", "nictype=physical", f"parent={parent}", "name=ph0")
    assert parent not in ns.links() and "ph0" in container_links(d, c)
    d.lxc("config", "device", "remove", c, "ph")
    assert parent in ns.links() and "ph0" not in container_links(d, c)

    d.lxc("network", "attach", name, c, "att", "eth9")
    assert "eth9" in container_links(d, c)
    assert d.request("GET", f"/1.0/containers/{c}").metadata["devices"]["att"] == {
        "type": "nic", "nictype": "bridged", "parent": name, "name": "eth9"}
    d.lxc("network", "detach", name, c, "att")
    assert "eth9" not in container_links(d, c)

    profile = unique("np", 6)
    d.lxc("profile", "create", profile)
    try:
        d.lxc("profile", "add", c, profile)
        d.lxc("profile", "device", "add", profile, "pn", "nic", "nictype=bridged", f"parent={name}", "name=eth7")
        assert "eth7" in container_links(d, c)
        assert config(d, c)["volatile.pn.host_name"] in ns.links()
        d.lxc("profile", "remove", c, profile)
        assert "eth7" not in container_links(d, c)
    finally:
        d.lxc("profile", "delete", profile, check=False)


def test_mac_filtering(d, ns, network, containers):
    """security.mac_filtering: frames with another source MAC are dropped by a bridge-family table."""
    name, subnet = network()
    c = containers("--network", name, start=False)
    d.lxc("config", "device", "set", c, "eth0", "security.mac_filtering", "true")
    d.lxc("start", c)
    cfg = config(d, c)
    host, hwaddr = cfg["volatile.eth0.host_name"], cfg["volatile.eth0.hwaddr"]
    table = ns.nft_table("bridge", f"lxdtx-mac-{host}")
    assert f'iifname "{host}" ether saddr != {hwaddr} drop' in table
    gateway = str(subnet.network_address + 1)
    wait_for(lambda: container_ipv4(d, c), 30, what="a DHCP address")
    assert in_container(d, c, "busybox", "ping", "-c", "1", "-W", "2", gateway, check=False).returncode == 0
    in_container(d, c, "ip", "link", "set", "eth0", "address", "00:16:3e:de:ad:01")
    in_container(d, c, "ip", "neigh", "flush", "dev", "eth0")
    assert in_container(d, c, "busybox", "ping", "-c", "2", "-W", "1", gateway, check=False).returncode != 0
    d.lxc("config", "device", "set", c, "eth0", "security.mac_filtering", "false")
    assert ns.nft_table("bridge", f"lxdtx-mac-{host}") is None
    d.lxc("config", "device", "set", c, "eth0", "security.mac_filtering", "true")
    d.lxc("stop", c, "--force")
    assert ns.nft_table("bridge", f"lxdtx-mac-{host}") is None


def test_vlan(d, ns, peer, containers):
    """`vlan` on macvlan/physical nics creates `parent.vlan` (needs the kernel's 802.1Q support)."""
    parent, _, _ = peer
    c = containers(start=False)
    d.lxc("config", "device", "add", c, "mv", "nic", "nictype=macvlan", f"parent={parent}", "vlan=10")
    result = d.lxc("start", c, check=False)
    if kernel_config("VLAN_8021Q") is False:
        assert "vlan" in error_of(result).lower()
        assert f"{parent}.10" not in ns.links()
        pytest.skip("the kernel lacks 802.1Q VLAN support (CONFIG_VLAN_8021Q)")
    assert result.returncode == 0, result.stderr
    assert ns.links()[f"{parent}.10"]["linkinfo"]["info_data"]["id"] == 10
    d.lxc("stop", c, "--force")
    assert f"{parent}.10" not in ns.links()


def test_sriov_and_infiniband_need_hardware(d, containers):
    """sriov and infiniband nics need SR-IOV / InfiniBand hardware; without it the error says so."""
    if os.path.isdir("/sys/class/infiniband") and os.listdir("/sys/class/infiniband"):
        pytest.skip("InfiniBand hardware present: run the hardware suite instead")
    c = containers(start=False)
    d.lxc("config", "device", "add", c, "vf", "nic", "nictype=sriov", "parent=lo")
    assert "isn't SR-IOV enabled" in error_of(d.lxc("start", c, check=False))
    pytest.skip("no SR-IOV capable interface or InfiniBand HCA on this machine (validation and command "
                "construction are unit-tested)")


def test_start_refused_cleanly(d, ns, network, containers):
    """A missing parent or a static address outside the subnet: the start fails with a clear error."""
    name, subnet = network()
    c = containers("--network", name, start=False)
    before = set(ns.links())
    d.lxc("config", "device", "set", c, "eth0", "ipv4.address", "192.0.2.10")
    assert "is not a free address of network" in error_of(d.lxc("start", c, check=False))
    d.lxc("config", "device", "set", c, "eth0", "ipv4.address", str(subnet.network_address + 1))
    assert "is not a free address of network" in error_of(d.lxc("start", c, check=False))
    d.lxc("config", "device", "unset", c, "eth0", "ipv4.address")
    d.lxc("config", "device", "set", c, "eth0", "parent", "nosuchbr0")
    assert "Parent device 'nosuchbr0'" in error_of(d.lxc("start", c, check=False))
    assert set(ns.links()) == before
    assert d.request("GET", f"/1.0/containers/{c}").metadata["status"] == "Stopped"
    result = d.lxc("config", "device", "add", c, "bad", "nic", "nictype=bridged", "parent=x", "vlan=7", check=False)
    assert "vlan" in error_of(result)


def test_maas_needs_a_server(d, network, containers):
    """maas.subnet keys need MAAS: unconfigured or unreachable, the change is refused and nothing changes."""
    from tests.integration.net import free_port

    name, _ = network()
    c = containers(start=False)
    args = ("config", "device", "add", c, "m", "nic", "nictype=bridged", f"parent={name}", "maas.subnet.ipv4=lan")
    assert "MAAS is currently unavailable" in error_of(d.lxc(*args, check=False))
    d.lxc("config", "set", "maas.api.url", f"http://127.0.0.1:{free_port()}")
    d.lxc("config", "set", "maas.api.key", "consumer:token:secret")
    try:
        assert "Unable to connect to MAAS" in error_of(d.lxc(*args, check=False))
        assert "m" not in d.request("GET", f"/1.0/containers/{c}").metadata["devices"]
    finally:
        d.lxc("config", "unset", "maas.api.url")
        d.lxc("config", "unset", "maas.api.key")
    pytest.skip("no MAAS server here: the MAAS API conversation is unit-tested against an in-memory MAAS")


def test_bridged_on_unmanaged_bridge_with_keys(d, ns, containers):
    """A bridged nic on a bridge the daemon does not manage, with name, hwaddr, mtu and host_name set."""
    bridge, host = unique("tbr", 6), unique("tvh", 6)
    ns.ip("link", "add", bridge, "type", "bridge")
    try:
        ns.ip("link", "set", bridge, "up")
        c = containers(start=False)
        d.lxc("config", "device", "add", c, "eth3", "nic", "nictype=bridged", f"parent={bridge}", "name=lan0",
              "hwaddr=00:16:3e:12:34:56", "mtu=1280", f"host_name={host}")
        d.lxc("start", c)
        assert ns.links()[host]["master"] == bridge
        link = container_links(d, c)["lan0"]
        assert (link["address"], link["mtu"]) == ("00:16:3e:12:34:56", 1280)
        assert d.request("GET", f"/1.0/networks/{bridge}").metadata["used_by"] == [f"/1.0/containers/{c}"]
        assert d.request("GET", f"/1.0/networks/{bridge}").metadata["type"] == "bridge"
        d.lxc("stop", c, "--force")
        assert host not in ns.links()
    finally:
        ns.ip("link", "del", bridge, check=False)
