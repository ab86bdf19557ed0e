# Set-up and test commands for a fresh Debian 12 machine (run as root).

DIR ?= /var/lib/lxdtx
VENV ?= .venv
PYTHON ?= python3

SYSTEM_PACKAGES = \
	lxc lxc-dev liblxc-common busybox-static dnsmasq-base btrfs-progs rsync nftables \
	iproute2 uidmap xz-utils bzip2 lzma gzip acl attr squashfs-tools \
	python3 python3-venv python3-dev gcc pkg-config \
	lvm2 thin-provisioning-tools xfsprogs e2fsprogs kmod \
	lxd-client etcd-server

# Only for the tests: the reference daemon (LXD 5.0.2) that migration interop runs against,
# what building the .deb (tests/integration/test_package.py) and checking it take, and
# debootstrap for the Debian test image (lxdtx image debian, built once, cached).
TEST_PACKAGES = lxd dpkg-dev build-essential debhelper dh-virtualenv logrotate debootstrap

.PHONY: deps test-deps venv run test unit check soak bench clean

# CRIU for checkpoint/restore (`lxc stop --stateful`, live migration), built under
# $(CRIU_PREFIX) by tools/criu/build-criu.sh (see its header): Debian 12's own fails on
# current kernels. A kernel it can't work on leaves those features refused, not the set-up.
CRIU_PREFIX ?= /opt/criu

deps: .deps-stamp
.deps-stamp:
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(SYSTEM_PACKAGES)
	PREFIX=$(CRIU_PREFIX) sh tools/criu/build-criu.sh || echo "CRIU unusable here: stateful stop and live migration stay refused"
	touch $@

test-deps: .test-deps-stamp
.test-deps-stamp: .deps-stamp
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(TEST_PACKAGES)
	touch $@

# The exec seed (see its source) is compiled against the host's liblxc by setup.py's build
# step, so `pip install .` ships it too; the editable install puts it in the source tree.
SEED = lxdtx/helpers/execseed

venv: $(VENV)/.stamp
$(VENV)/.stamp: requirements.txt requirements-test.txt setup.py $(SEED).c lxdtx/helpers/predump.c
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements-test.txt
	$(VENV)/bin/pip install -q --no-deps -e . --config-settings editable_mode=compat
	# Byte-code for `python -OO` (how `make run` starts the daemon), written even where
	# PYTHONDONTWRITEBYTECODE is set: compiling at every start costs time and memory.
	env -u PYTHONDONTWRITEBYTECODE $(VENV)/bin/python -OO -m compileall -q -j 0 lxdtx \
		"$$($(VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" > /dev/null
	touch $@

# Run the daemon in the foreground with all state under $(DIR) (`lxdtx daemon` is twistd
# with TLS loaded only once HTTPS is used; -OO keeps docstrings out of memory).
run: deps venv
	$(VENV)/bin/python -OO $(VENV)/bin/lxdtx daemon --dir $(DIR) --auto-init

# Every test: the lint, unit tests, then integration tests on real containers with the real lxc client.
test: deps test-deps venv check
	$(VENV)/bin/python -m pytest -q tests

# ruff's lint (settings in ruff.toml) and mypy (mypy.ini) over the daemon's code.
check: venv
	$(VENV)/bin/ruff check lxdtx
	$(VENV)/bin/mypy

unit: venv
	$(VENV)/bin/python -m pytest -q tests/unit

# The soak test, skipped by `make test`: eight clients cycle containers for
# LXDTX_SOAK_SECONDS (600) with no error, and the daemon's fds and memory stay flat.
soak: deps venv
	LXDTX_SOAK=1 $(VENV)/bin/python -m pytest -q tests/soak -p no:cacheprovider

clean:
	rm -rf $(VENV) .deps-stamp .test-deps-stamp build *.egg-info $(SEED)
