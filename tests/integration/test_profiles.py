"""Profiles with the real `lxc` client, with pylxd, and through the raw API (ETag, PATCH)."""

import pylxd
import yaml

NIC = {"type": "nic", "nictype": "bridged", "parent": "lxdbr0"}


def _profile(daemon, name):
    return daemon.request("GET", f"/1.0/profiles/{name}")


def test_lxc_profile_commands(daemon):
    """create, edit, set, device add, rename, show, list, delete."""
    daemon.lxc("profile", "create", "web")
    edited = yaml.safe_dump({"description": "Web servers", "config": {"limits.cpu": "2"},
                             "devices": {"root": {"type": "disk", "path": "/", "pool": "default"}}})
    daemon.lxc("profile", "edit", "web", input=edited)
    daemon.lxc("profile", "set", "web", "limits.memory", "256MB")
    daemon.lxc("profile", "device", "add", "web", "eth0", "nic", "nictype=bridged", "parent=lxdbr0")
    daemon.lxc("profile", "rename", "web", "www")
    assert _profile(daemon, "web").status == 404

    shown = yaml.safe_load(daemon.lxc("profile", "show", "www").stdout)
    assert shown["name"] == "www"
    assert shown["description"] == "Web servers"
    assert shown["config"] == {"limits.cpu": "2", "limits.memory": "256MB"}
    assert shown["devices"] == {"root": {"type": "disk", "path": "/", "pool": "default"},
                                "eth0": {"type": "nic", "nictype": "bridged", "parent": "lxdbr0"}}
    assert shown["used_by"] == []

    listing = daemon.lxc("profile", "list").stdout
    assert "www" in listing and "default" in listing and "Web servers" in listing

    daemon.lxc("profile", "unset", "www", "limits.memory")
    daemon.lxc("profile", "device", "remove", "www", "eth0")
    meta = _profile(daemon, "www").metadata
    assert meta["config"] == {"limits.cpu": "2"} and set(meta["devices"]) == {"root"}

    daemon.lxc("profile", "delete", "www")
    assert daemon.request("GET", "/1.0/profiles").metadata == ["/1.0/profiles/default"]


def test_lxc_profile_refusals(daemon):
    """Bad keys, bad values, bad devices and the default profile are refused by name; nothing changes."""
    daemon.lxc("profile", "create", "p")
    before = _profile(daemon, "p").metadata
    bad = daemon.lxc("profile", "set", "p", "limits.memory", "1GiB", check=False)
    assert bad.returncode != 0 and "limits.memory" in bad.stderr
    unknown = daemon.lxc("profile", "set", "p", "limits.nonsense", "1", check=False)
    assert unknown.returncode != 0 and "limits.nonsense" in unknown.stderr
    device = daemon.lxc("profile", "device", "add", "p", "data", "disk", "path=/mnt", check=False)
    assert device.returncode != 0 and "source" in device.stderr
    assert _profile(daemon, "p").metadata == before

    for args in (("delete", "default"), ("rename", "default", "other")):
        refused = daemon.lxc("profile", *args, check=False)
        assert refused.returncode != 0 and "default" in refused.stderr
    exists = daemon.lxc("profile", "create", "p", check=False)
    assert exists.returncode != 0 and "already exists" in exists.stderr
    taken = daemon.lxc("profile", "rename", "p", "default", check=False)
    assert taken.returncode != 0
    assert _profile(daemon, "default").metadata["description"] == "Default LXD profile"


def test_pylxd_profiles(daemon):
    """pylxd: create, get, all, exists, save (PUT), rename, delete."""
    client = pylxd.Client(endpoint=daemon.socket_path)
    profile = client.profiles.create("py", config={"security.nesting": "true"}, devices={"eth0": NIC},
                                     description="from pylxd")
    assert profile.config == {"security.nesting": "true"}
    assert profile.devices == {"eth0": NIC}
    assert profile.description == "from pylxd"
    assert client.profiles.exists("py") and not client.profiles.exists("nope")
    assert sorted(p.name for p in client.profiles.all()) == ["default", "py"]

    profile.config["limits.cpu"] = "1"
    profile.description = "changed"
    profile.save()
    again = client.profiles.get("py")
    assert again.config == {"security.nesting": "true", "limits.cpu": "1"}
    assert again.description == "changed"

    renamed = again.rename("py2")
    assert renamed.name == "py2" and renamed.config == again.config
    assert not client.profiles.exists("py")
    renamed.delete()
    assert [p.name for p in client.profiles.all()] == ["default"]


def test_pylxd_bad_profile(daemon):
    """pylxd gets the API error for an invalid profile."""
    client = pylxd.Client(endpoint=daemon.socket_path)
    try:
        client.profiles.create("bad", config={"limits.cpu.priority": "99"})
    except pylxd.exceptions.LXDAPIException as e:
        assert "limits.cpu.priority" in str(e)
    else:
        raise AssertionError("an invalid profile was created")
    assert not client.profiles.exists("bad")


def test_etag_and_patch(daemon):
    """GET gives an ETag; a wrong If-Match is 412 and changes nothing; the right one succeeds; PATCH merges."""
    daemon.request("POST", "/1.0/profiles", {"name": "e", "config": {"limits.cpu": "1", "user.a": "x"},
                                             "devices": {"eth0": NIC}, "description": "d"})
    first = _profile(daemon, "e")
    etag = first.headers["ETag"]
    assert len(etag) == 64

    stale = daemon.request("PUT", "/1.0/profiles/e", {"config": {}, "devices": {}, "description": ""},
                           headers={"If-Match": "0" * 64})
    assert stale.status == 412 and "ETag" in stale.json["error"]
    assert _profile(daemon, "e").metadata == first.metadata

    put = daemon.request("PUT", "/1.0/profiles/e", {"config": {"limits.cpu": "2"}, "devices": {}, "description": "p"},
                         headers={"If-Match": etag})
    assert put.status == 200
    after_put = _profile(daemon, "e")
    assert after_put.metadata["config"] == {"limits.cpu": "2"} and after_put.metadata["devices"] == {}
    assert after_put.headers["ETag"] != etag
    reused = daemon.request("PATCH", "/1.0/profiles/e", {"config": {"user.b": "y"}}, headers={"If-Match": etag})
    assert reused.status == 412

    patched = daemon.request("PATCH", "/1.0/profiles/e", {"config": {"user.b": "y"}, "devices": {"eth0": NIC}},
                             headers={"If-Match": after_put.headers["ETag"]})
    assert patched.status == 200
    meta = _profile(daemon, "e").metadata
    assert meta["config"] == {"limits.cpu": "2", "user.b": "y"}
    assert meta["devices"] == {"eth0": NIC}
    assert meta["description"] == "p"


def test_create_and_rename_answers(daemon):
    """Creation and rename answer 201 with the new Location; unknown fields are ignored."""
    created = daemon.request("POST", "/1.0/profiles", {"name": "n1", "project": "default", "type": "x"})
    assert created.status == 201 and created.headers["Location"] == "/1.0/profiles/n1"
    assert created.json["metadata"] is None
    renamed = daemon.request("POST", "/1.0/profiles/n1", {"name": "n2"})
    assert renamed.status == 201 and renamed.headers["Location"] == "/1.0/profiles/n2"
    listing = daemon.request("GET", "/1.0/profiles?recursion=1").metadata
    assert [p["name"] for p in listing] == ["default", "n2"]
    assert set(listing[1]) == {"name", "description", "config", "devices", "used_by"}
    assert daemon.request("DELETE", "/1.0/profiles/n2").json["metadata"] == {}
    assert daemon.request("DELETE", "/1.0/profiles/n2").status == 404
