"""The MAAS client against an in-memory MAAS API (no MAAS server here): requests, state, errors."""

import json
from urllib.parse import parse_qs, urlparse

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from lxdtx.network import maas

KEY = "ck:tk:ts"


class FakeMaas:
    """Just enough of MAAS API 2.0: one machine, spaces with subnets, devices with interfaces."""

    def __init__(self, version="2.4.2"):
        self.version = version
        self.requests = []
        self.devices = {}
        self.next_id = 100
        self.subnets = {"lan": {"id": 1, "name": "lan", "vlan": {"id": 5001}},
                        "lan6": {"id": 2, "name": "lan6", "vlan": {"id": 5001}},
                        "dmz": {"id": 3, "name": "dmz", "vlan": {"id": 5002}}}

    def _id(self):
        self.next_id += 1
        return self.next_id

    def _iface(self, name, mac, vlan):
        return {"id": self._id(), "name": name, "mac_address": mac, "vlan": vlan, "links": []}

    async def __call__(self, method, url, headers, form):
        parsed = urlparse(url)
        path = parsed.path.split("/api/2.0/", 1)[1]
        query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
        self.requests.append((method, path, query.get("op"), dict(form or {})))
        assert headers["Authorization"].startswith('OAuth oauth_version="1.0"')
        parts = path.strip("/").split("/")
        if path == "version/":
            return 200, json.dumps({"version": self.version}).encode()
        if path == "machines/":
            found = [{"system_id": "m1", "fqdn": "host1.maas"}] if query.get("hostname") == "host1" else []
            return 200, json.dumps(found).encode()
        if path == "spaces/":
            return 200, json.dumps([{"name": "default", "subnets": list(self.subnets.values())}]).encode()
        if path == "devices/" and method == "GET":
            found = [d for d in self.devices.values() if d["hostname"] == query.get("hostname")]
            return 200, json.dumps(found).encode()
        if path == "devices/" and method == "POST":
            sysid = f"d{self._id()}"
            device = {"system_id": sysid, "hostname": form["hostname"], "parent": form["parent"],
                      "interface_set": [self._iface("eth0", form["mac_addresses"], {"id": 0})]}
            self.devices[sysid] = device
            return 200, json.dumps(device).encode()
        if parts[0] == "devices" and method == "PUT":
            self.devices[parts[1]]["hostname"] = form["hostname"]
            return 200, b"{}"
        if parts[0] == "devices" and method == "DELETE":
            del self.devices[parts[1]]
            return 204, b""
        if parts[0] == "nodes":
            device = self.devices[parts[1]]
            if len(parts) == 3 and query.get("op") == "create_physical":
                iface = self._iface(form["name"], form["mac_address"], {"id": int(form["vlan"])})
                device["interface_set"].append(iface)
                return 200, json.dumps(iface).encode()
            iface = next(i for i in device["interface_set"] if i["id"] == int(parts[3]))
            if method == "PUT":
                iface.update(name=form["name"], vlan={"id": int(form["vlan"])})
            elif method == "DELETE":
                device["interface_set"].remove(iface)
            elif query.get("op") == "link_subnet":
                subnet = next(s for s in self.subnets.values() if s["id"] == int(form["subnet"]))
                iface["links"].append({"id": self._id(), "subnet": subnet, "ip_address": form.get("ip_address"),
                                       "mode": form["mode"].lower()})
            elif query.get("op") == "unlink_subnet":
                iface["links"] = [link for link in iface["links"] if link["id"] != int(form["id"])]
            return 200, json.dumps(iface).encode()
        return 404, b"No such endpoint"


def run(coroutine):
    """Run a coroutine that never waits on a reactor (the fake MAAS answers at once)."""
    d = defer.Deferred.fromCoroutine(coroutine)
    results = []
    d.addBoth(results.append)
    failure = results[0]
    if hasattr(failure, "raiseException"):
        failure.raiseException()
    return failure


def nic(mac, v4=None, v6=None, address=""):
    device = {"type": "nic", "nictype": "bridged", "parent": "br0", "hwaddr": mac}
    if v4:
        device["maas.subnet.ipv4"] = v4
        if address:
            device["ipv4.address"] = address
    if v6:
        device["maas.subnet.ipv6"] = v6
    return device


class HeaderTests(SynchronousTestCase):
    """OAuth 1.0 PLAINTEXT signing."""

    def test_header(self):
        """consumer:token:secret become the OAuth fields; the signature is `&secret`, percent-encoded."""
        self.assertEqual(maas.oauth_header("ck:tk:ts", nonce="n1", timestamp=1700000000), (
            'OAuth oauth_version="1.0", oauth_signature_method="PLAINTEXT", oauth_consumer_key="ck", '
            'oauth_token="tk", oauth_signature="%26ts", oauth_nonce="n1", oauth_timestamp="1700000000"'))

    def test_bad_key(self):
        """A key of the wrong shape is refused clearly."""
        self.assertRaises(maas.MaasError, maas.oauth_header, "nokey")
        self.assertRaises(maas.MaasError, maas.oauth_header, "a::c")


class InterfaceTests(SynchronousTestCase):
    """Which nics become MAAS interfaces."""

    def test_interfaces_of(self):
        """Only nics with maas.subnet keys; names and MACs from the device or its volatile keys."""
        config = {"volatile.eth1.hwaddr": "00:16:3E:00:00:02", "volatile.eth1.name": "eth1"}
        devices = {"eth0": nic("00:16:3e:00:00:01", "lan", address="10.0.0.5"),
                   "eth1": {"type": "nic", "nictype": "bridged", "parent": "br0", "maas.subnet.ipv6": "lan6"},
                   "eth2": {"type": "nic", "nictype": "bridged", "parent": "br0"},
                   "root": {"type": "disk", "path": "/", "pool": "p"}}
        self.assertEqual(maas.interfaces_of(config, devices), [
            {"name": "eth0", "hwaddr": "00:16:3e:00:00:01", "subnets": [{"name": "lan", "address": "10.0.0.5"}]},
            {"name": "eth1", "hwaddr": "00:16:3e:00:00:02", "subnets": [{"name": "lan6", "address": ""}]},
        ])

    def test_checks(self):
        """Duplicate or missing MACs and empty lists are refused."""
        self.assertRaises(maas.MaasError, maas.check_interfaces, [])
        iface = {"name": "eth0", "hwaddr": "m", "subnets": [{"name": "lan", "address": ""}]}
        self.assertRaises(maas.MaasError, maas.check_interfaces, [iface, dict(iface, name="eth1")])
        self.assertRaises(maas.MaasError, maas.check_interfaces, [dict(iface, hwaddr="")])


class ClientTests(SynchronousTestCase):
    """Container operations against the fake MAAS."""

    def setUp(self):
        self.server = FakeMaas()
        self.client = maas.MaasClient("http://maas.test:5240/MAAS", KEY, "host1", http=self.server)
        run(self.client.connect())

    def interfaces(self, devices):
        return maas.interfaces_of({}, devices)

    def test_connect(self):
        """The machine is found by hostname; its domain comes from its FQDN."""
        self.assertEqual(self.client.machine["system_id"], "m1")
        self.assertEqual(self.client.domain(), "maas")
        self.assertEqual(self.server.requests[0][:2], ("GET", "version/"))

    def test_connect_failures(self):
        """Unsupported versions, unknown machines and unreachable servers are clear errors."""
        old = maas.MaasClient("http://m", KEY, "host1", http=FakeMaas(version="1.9"))
        self.assertIn("unsupported version", str(self.assertRaises(maas.MaasError, run, old.connect())))
        missing = maas.MaasClient("http://m", KEY, "elsewhere", http=FakeMaas())
        self.assertIn("Couldn't find the specified machine", str(self.assertRaises(maas.MaasError, run,
                                                                                missing.connect())))

        async def refused(*args):
            raise ConnectionRefusedError("Connection refused")

        down = maas.MaasClient("http://127.0.0.1:1", KEY, "host1", http=refused)
        self.assertIn("Unable to connect to MAAS", str(self.assertRaises(maas.MaasError, run, down.connect())))

    def test_create(self):
        """A device under the machine, one interface per nic on its subnet's VLAN, static links."""
        run(self.client.create_container("c1", self.interfaces({
            "eth0": nic("00:16:3e:00:00:01", "lan", "lan6", address="10.0.0.5"),
            "eth1": nic("00:16:3e:00:00:02", "dmz")})))
        [device] = self.server.devices.values()
        self.assertEqual((device["hostname"], device["parent"]), ("c1", "m1"))
        first, second = device["interface_set"]
        self.assertEqual((first["name"], first["vlan"]["id"], second["name"], second["vlan"]["id"]),
                         ("eth0", 5001, "eth1", 5002))
        self.assertEqual([(l["subnet"]["name"], l["ip_address"], l["mode"]) for l in first["links"]],
                         [("lan", "10.0.0.5", "static"), ("lan6", None, "static")])
        self.assertEqual([l["subnet"]["name"] for l in second["links"]], ["dmz"])

    def test_create_unknown_subnet(self):
        """An unknown subnet fails before anything is created."""
        error = self.assertRaises(maas.MaasError, run, self.client.create_container(
            "c1", self.interfaces({"eth0": nic("00:16:3e:00:00:01", "nowhere")})))
        self.assertIn("Subnet 'nowhere' doesn't exist in MAAS", str(error))
        self.assertEqual(self.server.devices, {})

    def test_create_rolls_back(self):
        """A failure after the device exists removes the device again."""
        calls = []
        original = self.server.__call__

        async def failing(method, url, headers, form):
            calls.append(url)
            if "op=link_subnet" in url:
                return 500, b"boom"
            return await original(method, url, headers, form)

        self.client.http = failing
        self.assertRaises(maas.MaasError, run, self.client.create_container(
            "c1", self.interfaces({"eth0": nic("00:16:3e:00:00:01", "lan")})))
        self.assertEqual(self.server.devices, {})

    def test_update(self):
        """Removed nics lose their interface, new ones get one, changed subnets are relinked."""
        run(self.client.create_container("c1", self.interfaces({
            "eth0": nic("00:16:3e:00:00:01", "lan", address="10.0.0.5"),
            "eth1": nic("00:16:3e:00:00:02", "dmz")})))
        run(self.client.update_container("c1", self.interfaces({
            "eth0": nic("00:16:3e:00:00:01", "lan", address="10.0.0.6"),
            "eth2": nic("00:16:3e:00:00:03", "dmz")})))
        [device] = self.server.devices.values()
        by_mac = {i["mac_address"]: i for i in device["interface_set"]}
        self.assertEqual(sorted(by_mac), ["00:16:3e:00:00:01", "00:16:3e:00:00:03"])
        self.assertEqual([l["ip_address"] for l in by_mac["00:16:3e:00:00:01"]["links"]], ["10.0.0.6"])
        self.assertEqual([l["subnet"]["name"] for l in by_mac["00:16:3e:00:00:03"]["links"]], ["dmz"])

    def test_rename_and_delete(self):
        """Rename keeps the device (PUT hostname); delete removes it; deleting nothing is fine."""
        run(self.client.create_container("c1", self.interfaces({"eth0": nic("00:16:3e:00:00:01", "lan")})))
        run(self.client.rename_container("c1", "c2"))
        [device] = self.server.devices.values()
        self.assertEqual(device["hostname"], "c2")
        self.assertRaises(maas.MaasError, run, self.client.rename_container("c1", "c3"))
        run(self.client.delete_container("c2"))
        self.assertEqual(self.server.devices, {})
        run(self.client.delete_container("c2"))


class FakeConfig:
    def __init__(self, values):
        self.values = values

    def get(self, key):
        return self.values.get(key, "")


class DaemonSideTests(SynchronousTestCase):
    """`Maas`: configuration, and which container changes reach MAAS."""

    def test_unavailable(self):
        """Without maas.api.url/key a container needing MAAS is refused; others never ask."""
        side = maas.Maas(FakeConfig({}), http=FakeMaas())
        expanded = ({}, {"eth0": nic("00:16:3e:00:00:01", "lan")})
        error = self.assertRaises(maas.MaasError, run, side.container_changed("c1", None, expanded))
        self.assertEqual(str(error), maas.UNAVAILABLE)
        run(side.container_changed("c1", None, ({}, {"eth0": nic("00:16:3e:00:00:01")})))

    def test_lifecycle(self):
        """Create, update, rename, delete follow the container; unchanged nics make no request."""
        server = FakeMaas()
        side = maas.Maas(FakeConfig({"maas.api.url": "http://m", "maas.api.key": KEY, "maas.machine": "host1"}),
                         http=server)
        one = ({}, {"eth0": nic("00:16:3e:00:00:01", "lan")})
        two = ({}, {"eth0": nic("00:16:3e:00:00:01", "lan"), "eth1": nic("00:16:3e:00:00:02", "dmz")})
        run(side.container_changed("c1", None, one))
        self.assertEqual(len(server.devices), 1)
        count = len(server.requests)
        run(side.container_changed("c1", one, one))
        self.assertEqual(len(server.requests), count)
        run(side.container_changed("c1", one, two))
        self.assertEqual(len(next(iter(server.devices.values()))["interface_set"]), 2)
        run(side.container_renamed("c1", "c9", two))
        self.assertEqual(next(iter(server.devices.values()))["hostname"], "c9")
        run(side.container_changed("c9", two, ({}, {})))
        self.assertEqual(server.devices, {})
