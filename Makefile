# One entry point for people and CI: `make train` and `make test` each set everything up first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := build-essential cmake pkg-config git libboost-filesystem-dev libboost-thread-dev \
	libboost-system-dev libboost-chrono-dev libboost-date-time-dev \
	libboost-regex-dev libboost-iostreams-dev libzmq3-dev cppzmq-dev libsodium-dev libopenal1 python3-venv
ARGS ?=

.PHONY: setup apt venv envserver train test bench lint clean

setup: apt venv envserver

# Installs only what is missing, so a second `make setup` costs a few seconds.
apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "apt: installing $$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# torch goes in first and by exact version so that pip takes the local CPU build, never a CUDA one.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

envserver: venv
	PYTHON=$(abspath $(PY)) bash envserver/build.sh

train: setup
	$(PY) run.py --mode=train $(ARGS)

# pytest exits 5 when it collects nothing: that must fail, and does, since only 0 passes here.
test: setup
	$(PY) -m pytest $(ARGS)

bench: setup
	$(PY) run.py --mode=bench $(ARGS)

lint: venv
	$(VENV)/bin/ruff check beast tests run.py
	$(VENV)/bin/ruff format --check beast tests run.py
	$(VENV)/bin/mypy beast run.py

clean:
	rm -rf envserver/build $(VENV)
