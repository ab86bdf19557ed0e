# -*- test-case-name: tests.unit.test_network_maas -*-
"""MAAS integration (`maas_network`): containers registered as MAAS devices of this machine.

With the server keys `maas.api.url`, `maas.api.key` and `maas.machine` set, a
container whose nics carry `maas.subnet.ipv4`/`maas.subnet.ipv6` is a MAAS
device (parent: this machine) with one interface per such nic (its MAC, linked
to the named subnets, statically with the nic's `ipv4.address`/`ipv6.address`
when given). Containers are created, updated, renamed and deleted in MAAS along
with their own changes; a failure there fails the change.

The client speaks MAAS API 2.0 over HTTP with OAuth 1.0 PLAINTEXT signatures
(the API key is `consumer:token:secret`), as MAAS's own clients do.
"""

import json
import secrets
import socket
import time
from urllib.parse import quote, urlencode

from twisted.logger import Logger

from lxdtx import errors

API = "api/2.0"
UNAVAILABLE = "Can't perform the operation because MAAS is currently unavailable"


class MaasError(errors.BadRequest):
    """MAAS refused a request or could not be reached; the message says which."""


def oauth_header(api_key, nonce=None, timestamp=None):
    """The Authorization header of one request signed with a MAAS API key (PLAINTEXT)."""
    parts = api_key.split(":")
    if len(parts) != 3 or not all(parts):
        raise MaasError("Invalid MAAS API key (expected consumer:token:secret)")
    consumer, token, secret = parts
    values = {
        "oauth_version": "1.0",
        "oauth_signature_method": "PLAINTEXT",
        "oauth_consumer_key": consumer,
        "oauth_token": token,
        "oauth_signature": f"&{secret}",
        "oauth_nonce": nonce or secrets.token_hex(16),
        "oauth_timestamp": str(int(timestamp if timestamp is not None else time.time())),
    }
    return "OAuth " + ", ".join(f'{key}="{quote(value, safe="")}"' for key, value in values.items())


def interfaces_of(config, devices):
    """The MAAS interfaces of a container: [{"name", "hwaddr", "subnets": [{"name", "address"}]}]."""
    found = []
    for dev, device in sorted(devices.items()):
        if device.get("type") != "nic":
            continue
        subnets = []
        for version in (4, 6):
            subnet = device.get(f"maas.subnet.ipv{version}")
            if subnet:
                subnets.append({"name": subnet, "address": device.get(f"ipv{version}.address", "")})
        if not subnets:
            continue
        found.append({"name": device.get("name") or config.get(f"volatile.{dev}.name") or dev,
                      "hwaddr": (device.get("hwaddr") or config.get(f"volatile.{dev}.hwaddr") or "").lower(),
                      "subnets": subnets})
    return found


def check_interfaces(interfaces):
    """MAAS needs a distinct MAC and at least one subnet per interface."""
    if not interfaces:
        raise MaasError("At least one interface must be provided")
    seen = set()
    for iface in interfaces:
        if not iface["hwaddr"]:
            raise MaasError("Interfaces must have a MAC address")
        if iface["hwaddr"] in seen:
            raise MaasError("MAAS doesn't allow duplicate MAC addresses")
        if not iface["subnets"]:
            raise MaasError("Interfaces must have at least one subnet")
        seen.add(iface["hwaddr"])


async def treq_http(method, url, headers, form):
    """One HTTP request with treq: (status code, body bytes)."""
    import treq

    data = urlencode(form) if form else None
    if data is not None:
        headers = dict(headers, **{"Content-Type": "application/x-www-form-urlencoded"})
    response = await treq.request(method, url, headers={k: [v] for k, v in headers.items()},
                                  data=data.encode() if data else None, timeout=30)
    return response.code, await response.content()


class MaasClient:
    """The MAAS API calls behind the container operations (one machine, its devices)."""

    log = Logger()

    def __init__(self, url, api_key, machine, http=treq_http):
        self.base = f"{url.rstrip('/')}/{API}/"
        self.api_key = api_key
        self.machine_name = machine
        self.http = http
        self.machine = None

    # -- transport ------------------------------------------------------------------------
    async def call(self, method, path, params=None, op=None, form=None):
        query = dict(params or {})
        if op:
            query["op"] = op
        url = self.base + path + (f"?{urlencode(query, doseq=True)}" if query else "")
        headers = {"Authorization": oauth_header(self.api_key), "Accept": "application/json"}
        try:
            code, body = await self.http(method, url, headers, form)
        except MaasError:
            raise
        except Exception as e:
            raise MaasError(f"Unable to connect to MAAS at '{self.base}': {e}") from None
        if code >= 400:
            text = body.decode("utf-8", "replace").strip()
            raise MaasError(f"MAAS {method} {path} failed ({code}): {text}")
        if not body:
            return None
        try:
            return json.loads(body)
        except ValueError:
            raise MaasError(f"MAAS {method} {path} answered something other than JSON") from None

    # -- discovery ------------------------------------------------------------------------
    async def connect(self):
        """Check the API version and find this machine."""
        version = await self.call("GET", "version/")
        if not isinstance(version, dict) or not str(version.get("version", "")).startswith("2."):
            raise MaasError(f"Unable to connect MAAS at '{self.base}': unsupported version "
                            f"{(version or {}).get('version')}")
        machines = await self.call("GET", "machines/", {"hostname": self.machine_name})
        if not isinstance(machines, list) or len(machines) != 1:
            raise MaasError(f"Couldn't find the specified machine: {self.machine_name}")
        self.machine = machines[0]
        return self

    def domain(self):
        fqdn = self.machine.get("fqdn") or ""
        return fqdn.partition(".")[2]

    async def subnets(self):
        """{subnet name: subnet} over every space."""
        found = {}
        for space in await self.call("GET", "spaces/") or []:
            for subnet in space.get("subnets", []):
                found[subnet["name"]] = subnet
        return found

    async def device(self, name):
        """The MAAS device of container `name` under this machine, or None."""
        devices = await self.call("GET", "devices/", {"hostname": name, "domain": self.domain()}) or []
        mine = [d for d in devices if d.get("parent") in (None, self.machine["system_id"])]
        return mine[0] if len(mine) == 1 else None

    async def _check_subnets(self, interfaces):
        subnets = await self.subnets()
        for iface in interfaces:
            for subnet in iface["subnets"]:
                if subnet["name"] not in subnets:
                    raise MaasError(f"Subnet '{subnet['name']}' doesn't exist in MAAS")
        return subnets

    async def _link(self, device, interface_id, subnet, address):
        form = {"mode": "STATIC", "subnet": str(subnet["id"])}
        if address:
            form["ip_address"] = address
        await self.call("POST", f"nodes/{device['system_id']}/interfaces/{interface_id}/", op="link_subnet",
                        form=form)

    # -- container operations --------------------------------------------------------------
    async def create_container(self, name, interfaces):
        check_interfaces(interfaces)
        subnets = await self._check_subnets(interfaces)
        first = interfaces[0]
        device = await self.call("POST", "devices/", form={
            "hostname": name, "domain": self.domain(), "mac_addresses": first["hwaddr"],
            "parent": self.machine["system_id"]})
        try:
            sysid = device["system_id"]
            created = device.get("interface_set") or []
            if created:
                await self.call("PUT", f"nodes/{sysid}/interfaces/{created[0]['id']}/", form={
                    "name": first["name"], "vlan": str(subnets[first["subnets"][0]["name"]]["vlan"]["id"])})
            for iface in interfaces[1:]:
                await self.call("POST", f"nodes/{sysid}/interfaces/", op="create_physical", form={
                    "name": iface["name"], "mac_address": iface["hwaddr"],
                    "vlan": str(subnets[iface["subnets"][0]["name"]]["vlan"]["id"])})
            device = await self.device(name)
            if device is None:
                raise MaasError(f"Couldn't find the specified container: {name}")
            wanted = {iface["hwaddr"]: iface for iface in interfaces}
            for entry in device.get("interface_set") or []:
                iface = wanted.get((entry.get("mac_address") or "").lower())
                if iface is None:
                    raise MaasError(f"MAAS created an interface with a bad MAC: {entry.get('mac_address')}")
                for subnet in iface["subnets"]:
                    await self._link(device, entry["id"], subnets[subnet["name"]], subnet["address"])
        except Exception:
            try:
                await self.call("DELETE", f"devices/{device['system_id']}/")
            except Exception as e:
                self.log.error("Could not remove the MAAS device of {name}: {error}", name=name, error=e)
            raise

    async def update_container(self, name, interfaces):
        check_interfaces(interfaces)
        subnets = await self._check_subnets(interfaces)
        device = await self.device(name)
        if device is None:
            raise MaasError(f"Couldn't find the specified container: {name}")
        sysid = device["system_id"]
        wanted = {iface["hwaddr"]: iface for iface in interfaces}
        present = set()
        for entry in device.get("interface_set") or []:
            mac = (entry.get("mac_address") or "").lower()
            iface = wanted.get(mac)
            if iface is None:
                await self.call("DELETE", f"nodes/{sysid}/interfaces/{entry['id']}/")
                continue
            linked = set()
            for link in entry.get("links") or []:
                subnet_name = (link.get("subnet") or {}).get("name")
                match = [s for s in iface["subnets"] if s["name"] == subnet_name]
                if match and (not match[0]["address"] or match[0]["address"] == link.get("ip_address")):
                    linked.add(subnet_name)
                    continue
                await self.call("POST", f"nodes/{sysid}/interfaces/{entry['id']}/", op="unlink_subnet",
                                form={"id": str(link["id"])})
            for subnet in iface["subnets"]:
                if subnet["name"] not in linked:
                    await self._link(device, entry["id"], subnets[subnet["name"]], subnet["address"])
            present.add(mac)
        for mac, iface in sorted(wanted.items()):
            if mac in present:
                continue
            entry = await self.call("POST", f"nodes/{sysid}/interfaces/", op="create_physical", form={
                "name": iface["name"], "mac_address": mac,
                "vlan": str(subnets[iface["subnets"][0]["name"]]["vlan"]["id"])})
            for subnet in iface["subnets"]:
                await self._link(device, entry["id"], subnets[subnet["name"]], subnet["address"])

    async def rename_container(self, name, new_name):
        device = await self.device(name)
        if device is None:
            raise MaasError(f"Couldn't find the specified container: {name}")
        await self.call("PUT", f"devices/{device['system_id']}/", form={"hostname": new_name})

    async def delete_container(self, name):
        device = await self.device(name)
        if device is not None:
            await self.call("DELETE", f"devices/{device['system_id']}/")


class Maas:
    """The daemon's side: connects with the server keys (`maas.*` of the server `config`),
    keeps containers in step."""

    log = Logger()

    def __init__(self, config, http=treq_http):
        self.config = config
        self.http = http
        self._client = None
        self._settings = None

    def _wanted_settings(self):
        config = self.config
        url, key = config.get("maas.api.url"), config.get("maas.api.key")
        machine = config.get("maas.machine") or socket.gethostname()
        return (url, key, machine) if url and key else None

    async def client(self):
        """A connected client, or MaasError when MAAS is not configured or reachable."""
        settings = self._wanted_settings()
        if settings is None:
            raise MaasError(UNAVAILABLE)
        if self._client is None or self._settings != settings:
            client = MaasClient(*settings, http=self.http)
            await client.connect()
            self._client, self._settings = client, settings
        return self._client

    async def container_changed(self, name, before, after):
        """Sync a container's MAAS device; `before`/`after` are (config, devices) or None."""
        old = interfaces_of(*before) if before else []
        new = interfaces_of(*after) if after else []
        if old == new:
            return
        client = await self.client()
        if not new:
            await client.delete_container(name)
        elif await client.device(name) is None:
            await client.create_container(name, new)
        else:
            await client.update_container(name, new)

    async def container_renamed(self, name, new_name, expanded):
        if interfaces_of(*expanded):
            await (await self.client()).rename_container(name, new_name)

    async def container_deleted(self, name, expanded):
        if interfaces_of(*expanded):
            await (await self.client()).delete_container(name)
