"""The busybox image boots under liblxc directly: banner, attach, console shell, halt on
SIGPWR, reboot on SIGTERM/SIGINT, and DHCP from a test-run dnsmasq on a test-made bridge.

Every container, bridge, veth and dnsmasq is removed again, also when a test fails.
"""

import ipaddress
import os
import re
import secrets
import shutil
import signal
import subprocess
import time

import pytest

from lxdtx.image import busybox
from tests.integration.netns import wait_for

pytestmark = pytest.mark.timeout(180)

BANNER = "lxdtx busybox: booted"


def _require():
    if os.geteuid() != 0:
        pytest.skip("booting containers needs root")
    if not shutil.which("lxc-start"):
        pytest.skip("liblxc tools (Debian lxc) are not installed")
    if not (os.path.isfile(busybox.BUSYBOX) and busybox.is_static_elf(busybox.BUSYBOX)):
        pytest.skip("needs Debian's busybox-static")


def _run(*argv, check=True, timeout=30):
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


class Container:
    """A busybox container unpacked from the image and run by liblxc's own tools."""

    def __init__(self, image, workdir, network=("lxc.net.0.type = empty",), mount_auto=True):
        self.name = "lxdtxt-" + secrets.token_hex(4)
        self.lxcpath = os.path.join(workdir, "lxc")
        self.dir = os.path.join(self.lxcpath, self.name)
        self.rootfs = os.path.join(self.dir, "rootfs")
        self.console_log = os.path.join(self.dir, "console.log")
        self.config = os.path.join(self.dir, "config")
        os.makedirs(self.dir)
        _run("tar", "--numeric-owner", "-xpf", image, "-C", self.dir)
        lines = [
            f"lxc.uts.name = {self.name}",
            f"lxc.rootfs.path = dir:{self.rootfs}",
            "lxc.autodev = 1",
            "lxc.pty.max = 16",
            "lxc.tty.max = 0",
            "lxc.apparmor.profile = unconfined",
            f"lxc.console.logfile = {self.console_log}",
            f"lxc.log.file = {os.path.join(self.dir, 'lxc.log')}",
            "lxc.log.level = INFO",
            *network,
        ]
        if mount_auto:
            lines.append("lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")

    def lxc(self, tool, *args, check=True, timeout=30):
        return _run(tool, "-n", self.name, "-P", self.lxcpath, *args, check=check,
                    timeout=timeout)

    def start(self):
        self.lxc("lxc-start", "-f", self.config, "-d")
        self.lxc("lxc-wait", "-s", "RUNNING", "-t", "10")

    def state(self):
        return self.lxc("lxc-info", "-sH", check=False).stdout.strip() or "STOPPED"

    def init_pid(self):
        out = self.lxc("lxc-info", "-pH", check=False).stdout.strip()
        return int(out) if out.isdigit() else None

    def attach(self, command, check=True):
        return self.lxc("lxc-attach", "--clear-env", "--", "/bin/sh", "-c", command,
                        check=check)

    def console(self):
        try:
            with open(self.console_log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def destroy(self):
        if self.state() != "STOPPED":
            self.lxc("lxc-stop", "-k", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    _require()
    return busybox.build_image(str(tmp_path_factory.mktemp("image") / "busybox.tar.xz")).path


@pytest.fixture
def containers(image, tmp_path):
    """A factory of containers, each stopped (forced) and removed after the test."""
    made = []

    def make(**kwargs):
        container = Container(image, str(tmp_path), **kwargs)
        made.append(container)
        return container

    try:
        yield make
    finally:
        for container in made:
            container.destroy()


def _free_subnet():
    """A private /24 no address or route of the host overlaps."""
    used = _run("ip", "-4", "-o", "addr", "show").stdout + _run("ip", "-4", "route").stdout
    taken = [ipaddress.ip_network(m, strict=False)
             for m in re.findall(r"\b(\d+\.\d+\.\d+\.\d+(?:/\d+)?)", used)]
    for _ in range(100):
        net = ipaddress.ip_network(f"10.{secrets.randbelow(200) + 50}.{secrets.randbelow(256)}.0/24")
        if not any(net.overlaps(other) for other in taken):
            return net
    pytest.fail("no free private /24 for the test bridge")


class DhcpBridge:
    """A bridge with an address, and dnsmasq serving DHCP only on that bridge."""

    def __init__(self, workdir):
        suffix = secrets.token_hex(3)
        self.name = "lxdtxtb" + suffix
        self.veth = "lxdtxtv" + suffix
        self.net = _free_subnet()
        self.gateway = self.net.network_address + 1
        self.log = os.path.join(workdir, "dnsmasq.log")
        self.process = None

    def start(self):
        _run("ip", "link", "add", self.name, "type", "bridge")
        _run("ip", "addr", "add", f"{self.gateway}/{self.net.prefixlen}", "dev", self.name)
        _run("ip", "link", "set", self.name, "up")
        first, last = self.net.network_address + 100, self.net.network_address + 199
        self.process = subprocess.Popen([
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
            "--no-hosts", "--port=0", "--bind-interfaces", f"--interface={self.name}",
            "--except-interface=lo", f"--dhcp-range={first},{last},{self.net.netmask},1h",
            f"--dhcp-option=3,{self.gateway}", f"--dhcp-option=6,{self.gateway}",
            "--dhcp-option=15,lxdtx.test", "--dhcp-authoritative", "--user=root",
            f"--dhcp-leasefile={self.log}.leases", f"--log-facility={self.log}", "--log-dhcp",
            "--pid-file=",
        ], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def ready():
            assert self.process.poll() is None, f"dnsmasq exited: {self.read_log()}"
            return "sockets bound exclusively" in self.read_log()

        wait_for(ready, 10, interval=0.05, what="dnsmasq to listen")

    def read_log(self):
        try:
            with open(self.log) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def nic(self):
        """liblxc configuration of a veth on this bridge."""
        return (
            "lxc.net.0.type = veth",
            f"lxc.net.0.link = {self.name}",
            "lxc.net.0.flags = up",
            "lxc.net.0.name = eth0",
            "lxc.net.0.hwaddr = 00:16:3e:%02x:%02x:%02x" % tuple(secrets.token_bytes(3)),
            f"lxc.net.0.veth.pair = {self.veth}",
        )

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        for link in (self.veth, self.name):
            _run("ip", "link", "del", link, check=False)


@pytest.fixture
def dhcp_bridge(tmp_path):
    _require()
    bridge = DhcpBridge(str(tmp_path))
    try:
        bridge.start()
        yield bridge
    finally:
        bridge.stop()


def test_boot_attach_and_clean_halt(containers):
    """It boots, prints the banner, answers lxc-attach, and halts on SIGPWR within 5 s.

    Without lxc.mount.auto, rcS mounts /proc and /sys itself.
    """
    c = containers(mount_auto=False)
    c.start()
    assert c.state() == "RUNNING"
    wait_for(lambda: BANNER in c.console(), 10, interval=0.05, what="the boot banner")
    assert f"{BANNER} busybox" in c.console()
    assert c.attach("echo ok").stdout == "ok\n"
    mounts = c.attach("cat /proc/self/mounts").stdout
    assert re.search(r"^proc /proc proc ", mounts, re.M)
    assert re.search(r"^sysfs /sys sysfs ", mounts, re.M)
    assert re.search(r"^tmpfs /run tmpfs ", mounts, re.M)
    assert "inet 127.0.0.1/8" in c.attach("ip -4 addr show dev lo").stdout

    started = time.monotonic()
    c.lxc("lxc-stop", "-t", "10")  # liblxc's halt signal, SIGPWR
    elapsed = time.monotonic() - started
    assert c.state() == "STOPPED"
    assert elapsed < 5, f"clean halt took {elapsed:.1f}s"
    assert "Requesting system halt" in c.console()


def test_mounts_not_doubled(containers):
    """When liblxc already mounted /proc, /sys and /dev/pts, rcS mounts them no second time."""
    c = containers()
    c.start()
    wait_for(lambda: BANNER in c.console(), 10, interval=0.05, what="the boot banner")
    mounts = c.attach("cat /proc/self/mounts").stdout
    for target in ("/proc", "/sys", "/dev/pts", "/run"):
        count = len(re.findall(rf"^\S+ {re.escape(target)} ", mounts, re.M))
        assert count == 1, f"{target} mounted {count} times:\n{mounts}"


def test_console_shell(containers):
    """The console has an interactive root shell with the console as controlling tty."""
    pexpect = pytest.importorskip("pexpect")
    c = containers()
    c.start()
    wait_for(lambda: BANNER in c.console(), 10, interval=0.05, what="the boot banner")
    console = pexpect.spawn("lxc-console", ["-n", c.name, "-P", c.lxcpath, "-t", "0"],
                            timeout=10, encoding="utf-8")
    try:
        console.send("\r")
        # Field 7 of /proc/PID/stat: the shell's controlling tty (0 for none).
        console.send("echo lxdtx-$((6 * 7)) $(id -u) $(cut -d' ' -f7 /proc/$$/stat)\r")
        console.expect(r"lxdtx-42 0 (\d+)")
        assert console.match.group(1) != "0", "the console shell has no controlling tty"
        console.send("\x01q")  # lxc-console's escape: Ctrl-a q
        console.expect(pexpect.EOF)
    finally:
        console.close(force=True)


@pytest.mark.parametrize("how", ["SIGTERM to init", "lxc-stop -r (SIGINT)"])
def test_reboot(containers, how):
    """SIGTERM to init, and liblxc's reboot signal, restart the container without hanging."""
    c = containers()
    c.start()
    wait_for(lambda: BANNER in c.console(), 10, interval=0.05, what="the boot banner")
    first = c.init_pid()
    if how.startswith("SIGTERM"):
        os.kill(first, signal.SIGTERM)
    else:
        c.lxc("lxc-stop", "-r", "-t", "10")
    wait_for(lambda: c.init_pid() not in (None, first), 10, interval=0.05, what="the container to come back")
    assert c.state() == "RUNNING"
    wait_for(lambda: c.attach("echo ok", check=False).stdout == "ok\n", 10, interval=0.05, what="attach after reboot")


def test_dhcp(containers, dhcp_bridge):
    """On a bridge with dnsmasq, the container gets an address, default route and DNS."""
    c = containers(network=dhcp_bridge.nic())
    c.start()

    def address():
        out = c.attach("ip -4 addr show dev eth0", check=False).stdout
        found = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/(\d+)", out)
        return found and (ipaddress.ip_address(found.group(1)), int(found.group(2)))

    ip, prefix = wait_for(address, 30, interval=0.05, what="a DHCP lease on eth0")
    assert ip in dhcp_bridge.net and prefix == 24
    assert f"default via {dhcp_bridge.gateway} dev eth0" in c.attach("ip route").stdout
    resolv = c.attach("cat /etc/resolv.conf").stdout
    assert resolv.splitlines() == ["search lxdtx.test", f"nameserver {dhcp_bridge.gateway}"]
    assert f"DHCPACK({dhcp_bridge.name}) {ip}" in dhcp_bridge.read_log()
    # The DHCP client sent the container's host name.
    assert re.search(rf"DHCPACK\({dhcp_bridge.name}\) {ip} \S+ busybox", dhcp_bridge.read_log())


def test_dhcp_script_events(image, tmp_path):
    """The image's udhcpc script, run by the image's busybox in a fresh network namespace,
    applies bound, keeps the address on renew, and clears it on deconfig."""
    _require()
    root = tmp_path / "image"
    root.mkdir()
    _run("tar", "--numeric-owner", "-xpf", image, "-C", str(root))
    rootfs = str(root / "rootfs")
    lease = "interface=d0 ip=10.9.8.7 mask=24 broadcast=10.9.8.255 router='10.9.8.1 10.9.8.2' " \
            "dns='10.9.8.53 10.9.8.54' domain=lxdtx.test"
    steps = f"""
        set -e
        ip link set d0 up
        env {lease} /etc/udhcpc/default.script bound
        echo == bound; ip -4 addr show dev d0; ip route
        env {lease} /etc/udhcpc/default.script renew
        echo == renew; ip -4 addr show dev d0; ip route
        env interface=d0 /etc/udhcpc/default.script deconfig
        echo == deconfig; ip -4 addr show dev d0; ip route
    """
    # The host's iproute2 makes the link (busybox ip cannot name a veth peer).
    setup = 'ip link add d0 type veth peer name d1 && ip link set d1 up && exec "$@"'
    out = _run("unshare", "--net", "/bin/sh", "-c", setup, "-",
               "chroot", rootfs, "/bin/sh", "-c", steps).stdout
    bound, renew, deconfig = out.split("== ")[1:]
    for state in (bound, renew):
        assert "inet 10.9.8.7/24 brd 10.9.8.255" in state
        assert re.search(r"^default via 10.9.8.1 dev d0 *$", state, re.M), state
        assert re.search(r"^default via 10.9.8.2 dev d0 +metric 1 *$", state, re.M), state
    assert "inet " not in deconfig and "default" not in deconfig
    with open(os.path.join(rootfs, "etc/resolv.conf")) as f:
        assert f.read() == "search lxdtx.test\nnameserver 10.9.8.53\nnameserver 10.9.8.54\n"
