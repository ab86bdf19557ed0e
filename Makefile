# Set-up and test commands for a fresh Debian 12 machine (run as root).

DIR ?= /var/lib/lxdtx
VENV ?= .venv
PYTHON ?= python3

SYSTEM_PACKAGES = \
	lxc lxc-dev liblxc-common busybox-static dnsmasq-base btrfs-progs rsync nftables \
	iproute2 uidmap xz-utils bzip2 lzma gzip acl attr squashfs-tools \
	python3 python3-venv python3-dev gcc pkg-config \
	lvm2 thin-provisioning-tools xfsprogs e2fsprogs kmod \
	lxd-client

.PHONY: deps venv run test unit bench clean

deps: .deps-stamp
.deps-stamp:
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(SYSTEM_PACKAGES)
	touch $@

venv: $(VENV)/.stamp
$(VENV)/.stamp: requirements.txt requirements-test.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements-test.txt
	$(VENV)/bin/pip install -q --no-deps -e . --config-settings editable_mode=compat
	touch $@

# Run the daemon in the foreground with all state under $(DIR).
run: deps venv
	# -OO: no docstrings in memory (a few MB of an idle daemon).
	$(VENV)/bin/python -OO $(VENV)/bin/twistd -n --pidfile= lxdtx --dir $(DIR) --auto-init

# Every test: unit tests, then integration tests on real containers with the real lxc client.
test: deps venv
	$(VENV)/bin/python -m pytest -q tests

unit: venv
	$(VENV)/bin/python -m pytest -q tests/unit

clean:
	rm -rf $(VENV) .deps-stamp build *.egg-info
