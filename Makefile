# `make demo` and `make test` work on a fresh clone: each creates .venv with
# Python >= 3.12 and installs what it needs from pyproject.toml.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# The first interpreter >= 3.12 found: pyenv's (selected by .python-version), then PATH.
PYTHON ?= $(shell for p in "$$(pyenv which python 2>/dev/null)" python3.12 python3.13 python3 \
	"$$HOME/.pyenv/versions/3.12.1/bin/python" "$$HOME/.pyenv/versions/3.13.0/bin/python"; do \
	  [ -n "$$p" ] && command -v "$$p" >/dev/null 2>&1 && \
	  "$$p" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo "$$p"; break; }; \
	done)

.PHONY: demo test bench profile lint docs clean

$(VENV)/.created:
	@test -n "$(PYTHON)" || { echo "error: no Python >= 3.12 found (install one or set PYTHON=...)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	touch $@

$(VENV)/.installed-%: pyproject.toml $(VENV)/.created
	$(PY) -m pip install -q -e '.[$*]'
	touch $@

demo: $(VENV)/.installed-demo
	$(PY) -m fault_injection run demo --real-time --checkpoint .trio-mesa-runs/demo-$$(date +%Y%m%d-%H%M%S)

# The Redis store's tests run a real redis-server (Debian's package, 7.x), started and
# stopped by the tests themselves on a random loopback port.
$(VENV)/.redis: $(VENV)/.created
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server not found: installing Debian's redis-server package"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q redis-server; } || { \
	    echo "error: could not install redis-server (apt-get install -y redis-server," \
	      "as root or with sudo); the Redis store tests need it" >&2; exit 1; }; }
	@redis-server --version
	touch $@

test: $(VENV)/.installed-test $(VENV)/.redis
	$(PY) -m pytest

bench: $(VENV)/.installed-bench
	$(PY) benchmarks/run.py $(BENCH_ARGS)

profile: $(VENV)/.installed-bench
	$(PY) benchmarks/profile.py $(PROFILE_ARGS)

LINTED := trio_mesa fault_injection tests benchmarks examples docs/conf.py docs/_ext conftest.py

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy

# The site in docs/_build/html. Strict: a warning is an error (-W, reported all at once
# with --keep-going), every reference must resolve (-n), and a fresh environment (-E).
docs: $(VENV)/.installed-docs
	$(VENV)/bin/sphinx-build -W --keep-going -n -E -q -b html docs docs/_build/html

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis docs/_build
