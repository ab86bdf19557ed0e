"""The Debian package: `dpkg-buildpackage -us -uc -b` builds it, it installs, its `lxdtx daemon`
serves the real `lxc` client, and `dpkg --purge` leaves nothing behind.

The package is built from a copy of this tree in a scratch directory (the build writes
beside its source), installed with dpkg on this machine and purged at the end, also when
a test fails. It is skipped where the build tools are missing or where installing it
could touch state that is not the test's own (an installed lxdtx, /var/lib/lxdtx).
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from tests.daemonproc import ROOT, Daemon

PACKAGE = "lxdtx"
VENV = "/opt/venvs/lxdtx"
STATE = "/var/lib/lxdtx"
BUILD_TIMEOUT = 1500
# What the package's scripts and dpkg see: none of the test run's Python settings.
CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": os.environ.get("HOME", "/root"),
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
    **{k: v for k, v in os.environ.items() if k.startswith("PIP_")},
}
# Pieces of the tree the build must not see (local builds, venvs, caches).
IGNORED = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                 "execseed", "dropin.cache", ".*-stamp")

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT + 600)


def _installed():
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", PACKAGE], capture_output=True, text=True)
    return out.returncode == 0 and "installed" in out.stdout.split()


def _skip_reason():
    if os.geteuid() != 0:
        return "installing a package needs root"
    for tool in ("dpkg-buildpackage", "dh", "dh_virtualenv"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make test-deps installs dpkg-dev, debhelper, dh-virtualenv)"
    if _installed():
        return "an lxdtx package is installed on this machine: the test would replace and purge it"
    for path in (STATE, VENV):
        if os.path.exists(path):
            return f"{path} exists: purging the test's package would remove it"
    return None


def _run(argv, timeout, cwd=None):
    out = subprocess.run(argv, cwd=cwd, env=CLEAN_ENV, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{argv} failed ({out.returncode}):\n{out.stdout[-6000:]}\n{out.stderr[-6000:]}"
    return out


def _purge():
    subprocess.run(["dpkg", "--purge", PACKAGE], env=CLEAN_ENV, capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def package():
    """Build the .deb (timed), install it, hand out (deb path, build seconds, installed paths); purge after."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    scratch = tempfile.mkdtemp(prefix="lxdtx-deb-", dir="/var/tmp")
    try:
        source = os.path.join(scratch, "lxdtx")
        shutil.copytree(ROOT, source, ignore=IGNORED, symlinks=True)
        started = time.monotonic()
        _run(["dpkg-buildpackage", "-us", "-uc", "-b"], BUILD_TIMEOUT, cwd=source)
        seconds = time.monotonic() - started
        [deb] = [os.path.join(scratch, f) for f in os.listdir(scratch) if f.endswith(".deb")]
        try:
            install = subprocess.run(["dpkg", "-i", deb], env=CLEAN_ENV, capture_output=True, text=True,
                                     timeout=300)
            if install.returncode != 0:
                # Missing dependencies: let apt bring them in and finish the configuration.
                _run(["apt-get", "-f", "install", "-y", "--no-install-recommends"], 600)
            assert _installed()
            files = _run(["dpkg-query", "-L", PACKAGE], 60).stdout.split("\n")
            yield deb, seconds, [f for f in files if f.strip()]
        finally:
            _purge()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_package_contents(package):
    """The units, logrotate, completion, admin command and twistd plugin cache are in place."""
    deb, seconds, files = package
    print(f"dpkg-buildpackage -us -uc -b took {seconds:.0f}s; {os.path.getsize(deb) / 1e6:.1f} MB")
    assert os.path.realpath("/usr/bin/lxdtx") == f"{VENV}/bin/lxdtx"
    with open("/lib/systemd/system/lxdtx.service") as f:
        unit = f.read()
    assert "Type=notify" in unit and "KillMode=process" in unit
    assert "ExecStart=/usr/bin/lxdtx daemon --dir /var/lib/lxdtx" in unit
    with open("/lib/systemd/system/lxdtx-containers.service") as f:
        assert "ExecStop=/usr/bin/lxdtx shutdown" in f.read()
    assert os.path.isfile("/usr/share/bash-completion/completions/lxdtx")
    if shutil.which("bash"):
        words = _run(["bash", "-c", ". /usr/share/bash-completion/completions/lxdtx; "
                      "COMP_WORDS=(lxdtx wa); COMP_CWORD=1; _lxdtx; echo ${COMPREPLY[@]}"], 30).stdout
        assert words.split() == ["waitready"]
    if shutil.which("logrotate"):
        _run(["logrotate", "-d", "/etc/logrotate.d/lxdtx"], 60)
    [cache] = [f for f in _run(["find", VENV, "-name", "dropin.cache"], 60).stdout.split() if f]
    with open(cache, "rb") as f:
        assert b"lxdtx_plugin" in f.read()
    assert any(f.endswith("/lxdtx/helpers/execseed") for f in files)
    assert os.path.isdir(STATE)


def test_installed_daemon_serves_lxc(package, workdir):
    """The installed `lxdtx daemon` (none of this tree on its path) answers `lxc info`, tells
    $NOTIFY_SOCKET it is ready, runs exec through the packaged seed and stops on `lxdtx shutdown`."""
    notify_path = os.path.join(workdir, "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(60)
    d = Daemon()  # its own state directory: containers must be able to traverse it
    d.wrapper = ["env", "-u", "PYTHONPATH", "-u", "PYTHONHOME", "-u", "VIRTUAL_ENV", f"NOTIFY_SOCKET={notify_path}"]
    d.command = ["/usr/bin/lxdtx", "daemon"]
    try:
        d.start(timeout=120)
        assert notify.recv(100).startswith(b"READY=1")
        info = d.lxc("info").stdout
        assert "api_extensions:" in info and "auth: trusted" in info
        assert f"exec seed {VENV}/" in d.log()
        with open(f"/proc/{d.proc.pid}/cmdline", "rb") as f:
            assert f.read().split(b"\0")[0].startswith(f"{VENV}/bin/python".encode())
        # The packaged init, image builder, liblxc binding and exec seed, end to end.
        preseed = ("storage_pools:\n- {name: pkgpool, driver: dir}\nprofiles:\n- name: default\n"
                   "  devices:\n    root: {path: /, pool: pkgpool, type: disk}\n")
        out = subprocess.run(["/usr/bin/lxdtx", "init", "--preseed", "--dir", d.dir], input=preseed, env=CLEAN_ENV,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        image = _run(["/usr/bin/lxdtx", "image", "busybox", workdir, "--compression", "gzip"], 300).stdout.split()[0]
        d.lxc("image", "import", image, "--alias", "busybox")
        d.lxc("launch", "busybox", "pkg")
        assert d.lxc("exec", "pkg", "--", "echo", "from-the-package").stdout.strip() == "from-the-package"
        d.lxc("delete", "-f", "pkg")
        _run(["/usr/bin/lxdtx", "shutdown", "--dir", d.dir, "--timeout", "60"], 90)
        assert d.proc.wait(30) == 0
    finally:
        notify.close()
        d.cleanup()


def test_purge_leaves_nothing(package):
    """`dpkg --purge` removes every file it installed, the virtualenv with its run-time
    byte-code and plugin cache, the state and log directories and the unit links."""
    _, _, files = package
    # Run-time leftovers the package must clean up too: byte-code and a log.
    _run([f"{VENV}/bin/python", "-c", "import lxdtx.cli"], 60)
    with open("/var/log/lxdtx/lxdtx.log", "a") as f:
        f.write("a line\n")
    _run(["dpkg", "--purge", PACKAGE], 300)
    assert not _installed()
    shared = {"/.", "/", "/etc", "/opt", "/usr", "/usr/bin", "/usr/share", "/usr/share/doc", "/lib", "/lib/systemd",
              "/lib/systemd/system", "/var", "/var/log", "/etc/logrotate.d", "/usr/share/bash-completion",
              "/usr/share/bash-completion/completions", "/var/lib"}
    left = [f for f in files if f not in shared and os.path.lexists(f)]
    assert left == []
    for path in (VENV, STATE, "/var/log/lxdtx", "/etc/systemd/system/multi-user.target.wants/lxdtx.service",
                 "/etc/systemd/system/multi-user.target.wants/lxdtx-containers.service"):
        assert not os.path.lexists(path), path
