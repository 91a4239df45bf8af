# coserver: the two commands a new machine needs are in README.md:
#   make lab    set up (apt, venv, a COLO-capable QEMU, the lab guest) and run the lab
#   make test   set up and run the test suite
# Everything slow (QEMU build, guest image) is cached outside the repo under
# $(COSERVER_CACHE) (default ~/.cache/coserver), keyed by its inputs.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
CS := $(VENV)/bin/coserver
PYTEST := $(VENV)/bin/pytest
PYTEST_ARGS ?= --durations=25

# Debian 12 packages: QEMU (system copy, firmware, qemu-img), the QEMU build's
# dependencies, the lab guest's parts, namespaces, etcd (the witness) and etcdctl (etcd-client: the
# witness's roles and users), libvirt-python's build,
# the disk-booted Debian test guest's (mmdebstrap, SYSLINUX, FAT tools), and promtool (prometheus: the
# alert rules' tests, tests/monitoring).
APT_PACKAGES := procps qemu-system-x86 qemu-utils seabios busybox-static musl-tools e2fsprogs cpio \
	iproute2 etcd-server etcd-client libvirt-dev pkg-config gcc make python3-venv python3-dev xz-utils patch \
	libglib2.0-dev libpixman-1-dev libslirp-dev flex bison libfdt-dev device-tree-compiler \
	zlib1g-dev libgnutls28-dev ninja-build dpkg-dev mmdebstrap syslinux syslinux-common mtools dosfstools prometheus \
	chromium
# The lab's libvirtd per CoServer (`lab up --backend libvirt`, coserver/lab/libvirtd.py): the monolithic
# libvirtd with its QEMU driver, and virsh. Without recommends (they pull in the Xen, LXC and VirtualBox
# drivers, lvm2, swtpm), and without libvirt-daemon-system, whose postinst wants polkitd and an init
# system and would start the machine's own libvirtd; the user it would make (libvirt-qemu, which libvirt
# resolves before reading qemu.conf) is made here instead.
LIBVIRT_PACKAGES := libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients

.PHONY: setup apt venv qemu guest lab lab-down doctor lint test test-faults bench clean-venv

setup: apt venv qemu guest

apt:
	@missing=$$(for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "apt: installing" $$missing; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	else echo "apt: all packages present"; fi
	@missing=$$(for p in $(LIBVIRT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "apt: installing (no recommends)" $$missing; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@getent group libvirt-qemu >/dev/null || addgroup --quiet --system libvirt-qemu
	@getent passwd libvirt-qemu >/dev/null || adduser --quiet --system --ingroup libvirt-qemu --no-create-home \
	    --home /var/lib/libvirt --disabled-login --disabled-password --gecos "Libvirt Qemu" libvirt-qemu

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,bench]'
	touch $@

# Use the system QEMU if it passes the COLO self-test, else build the pinned, patched one.
qemu: venv guest
	@if ! $(CS) qemu select --system; then \
	    echo "building the pinned QEMU with coserver's COLO fixes (cached after the first time)"; \
	    built=$$($(PYTHON) qemu/build.py) && $(CS) qemu select "$$built"; fi

guest: venv
	@$(CS) image build

doctor: setup
	$(CS) doctor

# The main job: the one-machine lab, protected, then its status (`make lab-down` removes it).
lab: setup
	$(CS) lab up
	$(CS) lab status

lab-down:
	$(CS) lab down

# ruff (pyflakes, import order, bugbear) and mypy (strict on every module the controller daemon loads,
# and pair/), both configured in pyproject.toml; `make test` runs them first.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: setup lint
	$(PYTEST) $(PYTEST_ARGS)

# N trials of every fault on the lab (fresh pair per trial), a table of gaps and losses; the libvirt
# backend's faults (kill -9, SIGSTOP, virsh destroy, libvirtd restarted, power cut) the same way; then every
# hardware profile with each device set (virtio, and its emulated e1000/e1000e + megasas) kept
# protected under load for 20 checkpoints, then its primary killed, nothing lost.
TRIALS ?= 3
test-faults: setup
	$(VENV)/bin/python -m coserver.lab.trials --trials $(TRIALS)
	$(VENV)/bin/python -m coserver.lab.trials --trials $(TRIALS) --backend libvirt
	$(VENV)/bin/python -m coserver.lab.trials --profiles all

# Benchmarks on the lab (README "Benchmarks"): failover gap, cost of protection, the restart
# baseline, time to protect, controller overhead, TLS, entering COLO in both orders ->
# $(BENCH_OUT)/report.md, bench.json and PNG plots. About 30 min on 2 cores; `make bench BENCH_ARGS=--quick` is the ~10 min smoke run.
BENCH_OUT ?= bench-results
BENCH_ARGS ?=
bench: setup
	$(CS) bench --out $(BENCH_OUT) $(BENCH_ARGS)

clean-venv:
	rm -rf $(VENV)
