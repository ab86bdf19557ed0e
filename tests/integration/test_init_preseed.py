"""`lxdtx init --preseed` (then `lxc launch` works; a bad preseed changes nothing) and the
interactive `lxdtx init`, driven through a terminal with pexpect."""

import os
import subprocess

import pexpect

from tests.daemonproc import LXDTX


def _names(prefix):
    tag = f"{os.getpid() % 10000}"
    return f"{prefix}{tag}"


def _init(daemon, text, timeout=300):
    return subprocess.run([LXDTX, "init", "--preseed", "--dir", daemon.dir], input=text, capture_output=True,
                          text=True, timeout=timeout)


def _state(daemon):
    """Everything a preseed can touch: server config, managed networks, pools, profiles."""
    networks = [n for n in daemon.request("GET", "/1.0/networks?recursion=1").metadata if n["managed"]]
    pools = daemon.request("GET", "/1.0/storage-pools?recursion=1").metadata
    profiles = daemon.request("GET", "/1.0/profiles?recursion=1").metadata
    strip = lambda items, keys: sorted(({k: v for k, v in i.items() if k in keys} for i in items),  # noqa: E731
                                       key=lambda i: i["name"])
    return {"config": daemon.request("GET", "/1.0").metadata["config"],
            "networks": strip(networks, ("name", "config", "description")),
            "pools": strip(pools, ("name", "driver", "config", "description")),
            "profiles": strip(profiles, ("name", "config", "devices", "description"))}


def _import_busybox(daemon, workdir):
    out = subprocess.run([LXDTX, "image", "busybox", workdir, "--compression", "gzip"], capture_output=True,
                         text=True, timeout=300, check=True)
    daemon.lxc("image", "import", out.stdout.split()[0], "--alias", "busybox")


def test_preseed_then_launch(daemon, workdir):
    """Pool, bridge, default profile and server config from a preseed; a container then launches on them."""
    bridge, pool = _names("pre"), _names("prepool")
    result = _init(daemon, f"""
config:
  images.auto_update_interval: 15
networks:
- name: {bridge}
  type: bridge
  config:
    ipv4.address: auto
    ipv6.address: none
storage_pools:
- name: {pool}
  driver: dir
  description: from the preseed
profiles:
- name: default
  devices:
    root:
      path: /
      pool: {pool}
      type: disk
    eth0:
      name: eth0
      nictype: bridged
      parent: {bridge}
      type: nic
""")
    assert result.returncode == 0, result.stderr
    state = _state(daemon)
    assert state["config"]["images.auto_update_interval"] == "15"
    assert [n["name"] for n in state["networks"]] == [bridge]
    assert {"name": pool, "driver": "dir", "description": "from the preseed"}.items() <= \
        next(p for p in state["pools"] if p["name"] == pool).items()
    default = next(p for p in state["profiles"] if p["name"] == "default")
    assert default["devices"]["root"]["pool"] == pool and default["devices"]["eth0"]["parent"] == bridge

    _import_busybox(daemon, workdir)
    daemon.lxc("launch", "busybox", "seeded")
    try:
        info = daemon.request("GET", "/1.0/containers/seeded/state").metadata
        assert info["status"] == "Running"
        assert "eth0" in info["network"]
        assert daemon.request("GET", "/1.0/containers/seeded").metadata["expanded_devices"]["root"]["pool"] == pool
    finally:
        daemon.lxc("delete", "-f", "seeded", check=False)

    # Applying it again changes nothing and succeeds (existing items are merged, as in LXD).
    again = _init(daemon, f"storage_pools:\n- name: {pool}\n  driver: dir\n  description: from the preseed\n")
    assert again.returncode == 0, again.stderr
    assert _state(daemon) == state


def test_bad_preseed_changes_nothing(daemon):
    """A preseed that does not check is refused naming the field; one the daemon refuses at a
    later step is undone: created items deleted, updated ones put back."""
    before = _state(daemon)
    bridge, pool = _names("bad"), _names("badpool")
    checks = {
        "storage_pool: []\n": 'Unknown preseed key "storage_pool"',
        "storage_pools:\n- name: x\n": 'Missing "storage_pools[0].driver"',
        "networks: {name: x}\n": 'Invalid value for "networks": must be a list',
        f"profiles:\n- name: p\n  devices:\n    root: {{path: /}}\n": 'Missing "profiles[0].devices.root.type"',
        "networks:\n- name: a\n- name: a\n": '"a" is given twice',
        "config: [1]\n": 'Invalid value for "config": must be a map',
        "networks:\n- name: a\n  colour: red\n": 'Unknown key "colour" in "networks[0]"',
        "cluster:\n  enabled: true\n": "clustering is not supported",
        "config: {\n": "Invalid preseed YAML",
    }
    for text, message in checks.items():
        result = _init(daemon, text)
        assert result.returncode == 1 and message in result.stderr, (text, result.stderr)
        assert "Traceback" not in result.stderr

    steps = f"""
networks:
- name: {bridge}
  config: {{ipv4.address: auto, ipv6.address: none}}
storage_pools:
- name: {pool}
  driver: dir
profiles:
- name: default
  description: changed
  devices:
    root: {{path: /, pool: {pool}, type: disk}}
- name: extra
"""
    # The server config fails last: the network, pool and both profiles are undone.
    result = _init(daemon, steps + "config:\n  core.no_such_key: 1\n")
    assert result.returncode == 1 and "Failed to update the server config" in result.stderr, result.stderr
    assert "core.no_such_key" in result.stderr
    assert _state(daemon) == before
    # A profile the daemon refuses (a device of a type that does not exist).
    result = _init(daemon, steps + "- name: broken\n  devices:\n    ship: {type: spaceship}\n")
    assert result.returncode == 1 and 'Failed to create profile "broken"' in result.stderr, result.stderr
    assert _state(daemon) == before
    assert subprocess.run(["ip", "link", "show", bridge], capture_output=True).returncode != 0


def test_interactive_init(daemon):
    """`lxdtx init` asks lxd init's questions, asks again after a bad answer, prints the preseed
    and applies it."""
    bridge, pool = _names("ask"), _names("askpool")
    env = dict(daemon.env(), TERM="dumb")
    child = pexpect.spawn(LXDTX, ["init", "--dir", daemon.dir], env=env, encoding="utf-8", timeout=120)
    try:
        child.expect_exact("Do you want to configure a new storage pool? (yes/no) [default=yes]: ")
        child.sendline("maybe")
        child.expect_exact("Invalid input, try again.")
        child.expect_exact("Do you want to configure a new storage pool? (yes/no) [default=yes]: ")
        child.sendline("")
        child.expect_exact("Name of the new storage pool [default=default]: ")
        child.sendline(pool)
        child.expect(r"Name of the storage backend to use \([a-z, ]*dir[a-z, ]*\) \[default=dir\]: ")
        child.sendline("floppy")
        child.expect_exact("The requested backend 'floppy' isn't supported")
        child.expect_exact("[default=dir]: ")
        child.sendline("dir")
        child.expect_exact("Would you like to create a new local network bridge? (yes/no) [default=yes]: ")
        child.sendline("yes")
        child.expect_exact("What should the new bridge be called? [default=lxdbr0]: ")
        child.sendline(bridge)
        child.expect_exact("What IPv4 address should be used?")
        child.sendline("10.999.0.1/24")
        child.expect_exact("is not a CIDR subnet")
        child.expect_exact("What IPv4 address should be used?")
        child.sendline("auto")
        child.expect_exact("What IPv6 address should be used?")
        child.sendline("none")
        child.expect_exact("Would you like the LXD server to be available over the network? (yes/no) [default=no]: ")
        child.sendline("no")
        child.expect_exact("Would you like stale cached images to be updated automatically? (yes/no) [default=yes]: ")
        child.sendline("n")
        child.expect_exact('Would you like a YAML "lxd init" preseed to be printed? (yes/no) [default=no]: ')
        child.sendline("yes")
        child.expect_exact(f"- name: {pool}")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0, child.before
    finally:
        if child.isalive():
            child.terminate(force=True)
    state = _state(daemon)
    assert [n["name"] for n in state["networks"]] == [bridge]
    assert state["networks"][0]["config"]["ipv6.address"] == "none"
    assert any(p["name"] == pool and p["driver"] == "dir" for p in state["pools"])
    default = next(p for p in state["profiles"] if p["name"] == "default")
    assert default["devices"]["root"] == {"type": "disk", "path": "/", "pool": pool}
    assert default["devices"]["eth0"]["parent"] == bridge
    assert state["config"]["images.auto_update_interval"] == "0"
