# Two commands: `make run` and `make test`. Both set everything up, idempotently.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYS_STAMP := .make/system-packages
# Packages the tests and the quickstart use (runc and image tools for the runc driver).
# CNI plugins, nftables and wrk: container networking and its benchmarks; kmod: modprobe
# br_netfilter where it is not loaded yet.
SYS_PACKAGES := iproute2 procps runc umoci skopeo docker-registry busybox-static dnsutils dnsperf dnsmasq-base \
  containernetworking-plugins nftables wrk kmod

.PHONY: run test venv system lint typecheck unit bench clean

# System packages via apt, only when root and apt exists (CI is root); otherwise we assume
# they are present. python3-venv is added when the interpreter cannot create a venv.
$(SYS_STAMP): Makefile
	@mkdir -p $(dir $@)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(SYS_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  fi; \
	fi
	@touch $@

system: $(SYS_STAMP)

$(BIN)/python: | $(SYS_STAMP)
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)

run: system venv
	$(BIN)/shoal up -f examples/quickstart.yaml

lint: venv
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy src

unit: venv
	$(BIN)/pytest -q tests/unit

test: system venv lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider

bench: venv
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .make .mypy_cache .ruff_cache .pytest_cache
