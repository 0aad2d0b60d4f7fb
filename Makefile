# Two entry points that work on a fresh Debian/Ubuntu machine as root: `make demo` and `make test`.
# Each installs what it needs first (Debian packages for the lab, a virtualenv for Python).
SHELL := /bin/bash
VENV := .venv
PYTHON ?= python3
DEMO_DIR ?= .lab/demo
DEMO_SCENARIO ?= seed-incidents
# DEMO_MODE=nftables boots the demo with kube-proxy in nftables mode (fixtures.lab up --mode).
DEMO_MODE ?=
DEMO_KIND_DIR ?= .lab/demo-kind
KIND_CLUSTER ?= lab
# What the lab needs on the host: qemu (software emulation), the userland copied into the guest
# image, ssh/ssh-keygen to reach the nodes, cpio/kmod to pack modules into the initramfs;
# chromium renders the HTML report in its test, shellcheck checks the fix script in its tests.
APT_PACKAGES := qemu-system-x86 busybox-static bash ipvsadm openssh-server openssh-client \
	iproute2 procps nftables kmod cpio gzip python3-venv chromium shellcheck \
	dash libdevmapper1.02.1 libseccomp2
# Debian's python3 (not the virtualenv's) is copied into the agent image's base and the lab guest,
# where the node reader runs (fixtures/lab/image.py copy_python).
APT_PACKAGES += python3
# ipset and iptables (legacy and nft): the leftovers of IPVS mode that a switch to nftables may
# leave (issue 20), for the lab guest (fixtures/lab/image.py copies host binaries into it) and
# for the unit tests, which record their real output in a network namespace of their own.
APT_PACKAGES += ipset iptables
# kubectl, for the tests that read the lab's API server with it unchanged: Debian's
# kubernetes-client, unless a kubectl is already installed (another package's /usr/bin/kubectl,
# such as Google Cloud SDK's, would make dpkg refuse it).
APT_PACKAGES += $(if $(shell command -v kubectl 2>/dev/null),,kubernetes-client)
# The kind-shaped lab's dockerd runs only inside the VM, from Debian's docker.io unpacked into its
# image (libdevmapper and libseccomp above are the host libraries copied in with it). The host
# needs only a docker CLI: Debian 12 has no client-only package, so when `docker` is missing its
# client binary is unpacked from docker.io's .deb; nothing is installed that could start a daemon.
DOCKER_CLI_PACKAGE := docker.io
DOCKER_CLI_DIR ?= /usr/local/bin

# The agent image (docs/agents.md): AGENT_IMAGE is its tag (default vipcheck-agent:VERSION, the
# image `vipcheck manifests` names), AGENT_BASE the Python base it is built FROM.
AGENT_IMAGE ?=
AGENT_BASE ?= python:3.12-slim

.PHONY: deps system-deps docker-cli test bench bench-lab fuzz demo demo-down demo-kind demo-kind-down \
	agent-image clean

deps: system-deps docker-cli $(VENV)/.installed

system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ] || ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then \
		echo "deps: apt-get install $$missing"; \
		apt-get update -q >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	fi

docker-cli:
	@if ! command -v docker >/dev/null; then \
		echo "deps: docker CLI from $(DOCKER_CLI_PACKAGE) (the client binary only)"; \
		scratch=$$(mktemp -d) && cd "$$scratch" && \
		apt-get download -q $(DOCKER_CLI_PACKAGE) >/dev/null 2>&1 && \
		dpkg-deb -x $(DOCKER_CLI_PACKAGE)_*.deb root && \
		install -m 0755 root/usr/bin/docker $(DOCKER_CLI_DIR)/docker && \
		cd / && rm -rf "$$scratch"; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev,lab]'
	touch $@

# The project's own tests: lint, types, unit, lab integration. tox.ini has the same steps as
# separate environments; here they share the one virtualenv, to install once. The unit tests run
# in one pytest-xdist worker per CPU (a dependency already, for `vipcheck -n`): about 4 1/2
# minutes instead of 6 on 2 cores. The lab tests stay in one process, which shares its VMs.
test: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m vipcheck.checks.docs --check
	$(VENV)/bin/pytest tests -m "not lab" -n auto
	VIPCHECK_LAB_BOOT_AHEAD=1 $(VENV)/bin/pytest tests -m lab --durations=12

# Scale: replay synthetic snapshots up to 100 nodes x 5,000 Services against the targets (bench/).
bench: $(VENV)/.installed
	$(VENV)/bin/python -m bench

# The live path: boot the lab's big scenario (3 nodes, 2,000 Services), time vipcheck --no-probe
# against a raw gather of the same nodes, alternating, and check the ratio (bench/lab.py).
bench-lab: deps
	$(VENV)/bin/python -m bench --lab

# The parsers' fuzzing with the long hypothesis profile (`make test` runs the quick one).
fuzz: deps
	VIPCHECK_HYPOTHESIS_PROFILE=long $(VENV)/bin/pytest tests/unit/parse/test_fuzz.py -p no:cacheprovider

# The built-in lab cluster with the three founding incidents: the symptoms from the client, then
# vipcheck finding their causes on the nodes (it exits 1 when it finds violations, as it must here).
demo: deps
	$(VENV)/bin/python -m fixtures.lab down --workdir $(DEMO_DIR) 2>/dev/null || true
	$(VENV)/bin/python -m fixtures.lab up --scenario $(DEMO_SCENARIO) --workdir $(DEMO_DIR) \
		$(if $(DEMO_MODE),--mode $(DEMO_MODE))
	$(VENV)/bin/python -m fixtures.demo --workdir $(DEMO_DIR)
	$(VENV)/bin/vipcheck --kubeconfig $(DEMO_DIR)/kubeconfig --ssh-config $(DEMO_DIR)/ssh_config \
		--vipcheck-json reports/demo-summary.json --vipcheck-html reports/demo.html \
		--vipcheck-fix-script reports/demo-fix.sh -rf; rc=$$?; [ $$rc -eq 1 ] || exit $$rc
	@echo "Report: $(CURDIR)/reports/demo.html (opens from disk, no network)." \
		"Fix script for review: reports/demo-fix.sh (prints what it would do; --apply runs it)."
	@echo "The lab keeps running: ssh -F $(DEMO_DIR)/ssh_config node-1;" \
		"kubectl --kubeconfig $(DEMO_DIR)/kubeconfig get svc -A; make demo-down stops it."

demo-down:
	$(VENV)/bin/python -m fixtures.lab down --workdir $(DEMO_DIR)

# The same demo on the kind-shaped lab: dockerd in the VM, each node a kind-named container that
# vipcheck reaches with docker exec (DOCKER_HOST from the lab); the client probes from outside.
demo-kind: deps
	$(VENV)/bin/python -m fixtures.lab down --workdir $(DEMO_KIND_DIR) 2>/dev/null || true
	$(VENV)/bin/python -m fixtures.lab up --runtime docker --cluster $(KIND_CLUSTER) \
		--scenario $(DEMO_SCENARIO) --workdir $(DEMO_KIND_DIR) $(if $(DEMO_MODE),--mode $(DEMO_MODE))
	$(VENV)/bin/python -m fixtures.demo --workdir $(DEMO_KIND_DIR)
	DOCKER_HOST=$$(cat $(DEMO_KIND_DIR)/docker_host) $(VENV)/bin/vipcheck --kind $(KIND_CLUSTER) \
		--kubeconfig $(DEMO_KIND_DIR)/kubeconfig \
		--hosts ssh://client --ssh-config $(DEMO_KIND_DIR)/ssh_config \
		--vipcheck-json reports/demo-kind-summary.json -rf; rc=$$?; [ $$rc -eq 1 ] || exit $$rc
	@echo "The lab keeps running: DOCKER_HOST=$$(cat $(DEMO_KIND_DIR)/docker_host) docker ps;" \
		"docker exec $(KIND_CLUSTER)-worker ip addr; make demo-kind-down stops it."

demo-kind-down:
	$(VENV)/bin/python -m fixtures.lab down --workdir $(DEMO_KIND_DIR)

# The wheels (vipcheck's, pyroute2's and pip's) are built into build/agent/, the build context;
# then the top-level Dockerfile is built by the daemon the docker CLI reaches (DOCKER_HOST or
# DOCKER_CONTEXT: this machine runs none; the kind-shaped lab's does, DIR/docker_host), with the
# legacy builder where the CLI has no buildx. Push it where the nodes pull from yourself.
agent-image: $(VENV)/.installed
	$(VENV)/bin/python -m agent_image $(if $(AGENT_IMAGE),--image $(AGENT_IMAGE)) --base $(AGENT_BASE)

clean:
	rm -rf build $(VENV) .tox .mypy_cache .ruff_cache .pytest_cache .bench .hypothesis
