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

# Debian 12 packages, one list per purpose in deps/ (the Vagrant box builder reads the same files):
# apt-setup.txt what `make setup` needs (QEMU and its build, the lab guest, etcd, the venv's builds),
# apt-libvirt.txt the libvirt backend (installed without recommends), apt-test.txt what only the tests
# use (promtool, chromium), apt-vagrant.txt the Vagrant lab's host side.
apt_list = $(shell sed -e 's/\#.*//' deps/$(1) | tr -s ' \n' ' ')
APT_PACKAGES := $(call apt_list,apt-setup.txt)
LIBVIRT_PACKAGES := $(call apt_list,apt-libvirt.txt)
APT_TEST_PACKAGES := $(call apt_list,apt-test.txt)
APT_VAGRANT_PACKAGES := $(call apt_list,apt-vagrant.txt)

# apt_install(packages, extra apt-get options): install those not installed yet.
define apt_install
	@missing=$$(for p in $(1); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "apt: installing" $$missing; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(2) $$missing; \
	else echo "apt: all packages present"; fi
endef

.PHONY: setup apt apt-test apt-vagrant vagrant-setup vagrant-up vagrant-down vagrant-test venv qemu guest lab lab-down doctor lint test test-faults bench clean-venv

setup: apt venv qemu guest

apt:
	$(call apt_install,$(APT_PACKAGES),)
	$(call apt_install,$(LIBVIRT_PACKAGES),--no-install-recommends)
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

apt-test:
	$(call apt_install,$(APT_TEST_PACKAGES),)

test: setup apt-test apt-vagrant lint
	$(PYTEST) $(PYTEST_ARGS)

# N trials of every fault on the lab (fresh pair per trial), a table of gaps and losses; the libvirt
# backend's faults (kill -9, SIGSTOP, virsh destroy, libvirtd restarted, power cut) the same way; then every
# hardware profile with each device set (virtio, and its emulated e1000/e1000e + megasas) kept
# protected under load for 20 checkpoints, then its primary killed, nothing lost; then the whole quick
# bench as a test (CI runs it with one trial per fault and without its protect section).
TRIALS ?= 3
test-faults: setup
	$(VENV)/bin/python -m coserver.lab.trials --trials $(TRIALS)
	$(VENV)/bin/python -m coserver.lab.trials --trials $(TRIALS) --backend libvirt
	$(VENV)/bin/python -m coserver.lab.trials --profiles all
	COSERVER_BENCH_QUICK_FULL=1 $(PYTEST) -q tests/bench/test_bench_quick.py

# The Vagrant lab (README "The Vagrant lab"): cs1, cs2 and the witness as three machines of their own,
# with their own libvirtd in a network namespace of their own. vagrant-up builds the box (cached), brings
# the machines up and the FT server protected; vagrant-down leaves no domain, network or volume;
# vagrant-test runs the fault list on them (kill the primary's QEMU, cut one sync link, power cut).
apt-vagrant:
	$(call apt_install,$(APT_VAGRANT_PACKAGES),--no-install-recommends)

vagrant-setup: setup apt-vagrant

vagrant-up: vagrant-setup
	$(CS) vagrant up

vagrant-down: venv
	$(CS) vagrant down

vagrant-test: vagrant-setup
	$(VENV)/bin/python -m coserver.lab.vagranttrials

# Benchmarks on the lab (README "Benchmarks"): failover gap, cost of protection, the restart
# baseline, time to protect, controller overhead, TLS, entering COLO in both orders ->
# $(BENCH_OUT)/report.md, bench.json and PNG plots. About 60 min on 2 cores; `make bench BENCH_ARGS=--quick` is the ~15 min smoke run.
BENCH_OUT ?= bench-results
BENCH_ARGS ?=
bench: setup
	$(CS) bench --out $(BENCH_OUT) $(BENCH_ARGS)

clean-venv:
	rm -rf $(VENV)
