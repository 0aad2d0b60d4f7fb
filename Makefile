# Two entry points that work on a fresh Debian/Ubuntu machine as root: `make demo` and `make test`.
# Each installs what it needs first (Debian packages for the lab, a virtualenv for Python).
SHELL := /bin/bash
VENV := .venv
PYTHON ?= python3
DEMO_DIR ?= .lab/demo
DEMO_SCENARIO ?= seed-incidents
# What the lab needs on the host: qemu (software emulation), the userland copied into the guest
# image, ssh/ssh-keygen to reach the nodes, cpio/kmod to pack modules into the initramfs;
# chromium renders the HTML report in its test, shellcheck checks the fix script in its tests.
APT_PACKAGES := qemu-system-x86 busybox-static bash ipvsadm openssh-server openssh-client \
	iproute2 procps nftables kmod cpio gzip python3-venv chromium shellcheck

.PHONY: deps system-deps test bench demo demo-down clean

deps: system-deps $(VENV)/.installed

system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ] || ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then \
		echo "deps: apt-get install $$missing"; \
		apt-get update -q >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev,lab]'
	touch $@

# The project's own tests: lint, types, unit, lab integration. tox.ini has the same steps as
# separate environments; here they share the one virtualenv, to install once.
test: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m vipcheck.checks.docs --check
	$(VENV)/bin/pytest tests -m "not lab"
	$(VENV)/bin/pytest tests -m lab

# Scale: replay synthetic snapshots up to 100 nodes x 5,000 Services against the targets (bench/).
bench: $(VENV)/.installed
	$(VENV)/bin/python -m bench

# The built-in lab cluster with the three founding incidents: the symptoms from the client, then
# vipcheck finding their causes on the nodes (it exits 1 when it finds violations, as it must here).
demo: deps
	$(VENV)/bin/python -m fixtures.lab down --workdir $(DEMO_DIR) 2>/dev/null || true
	$(VENV)/bin/python -m fixtures.lab up --scenario $(DEMO_SCENARIO) --workdir $(DEMO_DIR)
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

clean:
	rm -rf $(VENV) .tox .mypy_cache .ruff_cache .pytest_cache .bench
