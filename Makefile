# One entry point for people and CI: `make train` and `make test` each set everything up first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := build-essential cmake pkg-config git libboost-filesystem-dev libboost-thread-dev \
	libboost-system-dev libboost-chrono-dev libboost-date-time-dev \
	libboost-regex-dev libboost-iostreams-dev libzmq3-dev cppzmq-dev libsodium-dev libopenal1 python3-venv
ARGS ?=

.PHONY: setup apt venv envserver train test bench lint clean serve-host versus-sf

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

# beast and Sample Factory 2.1.1 side by side (docs/benchmarks.md); ARGS=--install puts Sample Factory into .venv-sf.
versus-sf: setup
	$(PY) -m beast.bench.versus $(ARGS)

lint: venv
	$(VENV)/bin/ruff check beast tests run.py
	$(VENV)/bin/ruff format --check beast tests run.py
	$(VENV)/bin/mypy beast run.py

# An env host, serving games to a trainer elsewhere (run.py --mode=serve): the env server, its launcher and what
# they import (vizdoom, pyzmq, numpy at pyproject's pins), in a venv of their own; no torch, nothing of the trainer.
HOST_VENV ?= .venv-host
HOST_DEPS = vizdoom pyzmq numpy

serve-host: apt
	test -x $(HOST_VENV)/bin/python || python3 -m venv $(HOST_VENV)
	$(HOST_VENV)/bin/python -m pip install -q $$(python3 -c 'import re, sys, tomllib; \
		deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; \
		print(" ".join(repr(d) for d in deps if re.split("[=<>]", d)[0] in sys.argv[1:]))' $(HOST_DEPS))
	PYTHON=$(abspath $(HOST_VENV))/bin/python bash envserver/build.sh
	PYTHONPATH=$(CURDIR) $(HOST_VENV)/bin/python run.py --mode=serve $(ARGS)

clean:
	rm -rf envserver/build $(VENV) $(HOST_VENV)
