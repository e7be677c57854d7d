# Interlook: the two commands a newcomer runs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)

.PHONY: venv deps test unit lint run env-up env-down binaries bench chaos clean constraints

# constraints.txt pins every package to the version the suite last passed
# with, so a venv (or an image, see Dockerfile) made next month is the tested one.
$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || PYTHON=python3
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test,bench]'
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

venv: $(STAMP)

# After a deliberate upgrade (pip install -U ... in .venv, then make test):
# write what is installed now as the new pins.
constraints:
	@{ echo "# Exact versions the suite passed with (runtime, test, bench): make constraints rewrites it."; \
	   echo "# Used by the Makefile's venv and the Dockerfile: pip install -c constraints.txt"; \
	   $(PY) -m pip freeze --all --exclude-editable | grep -v '^setuptools=='; } > constraints.txt

# System packages and real components the integration tests run against
# (cached under ~/.cache/interlook; quick when already there).
deps: venv
	bash scripts/install-deps.sh

test: deps
	bash scripts/test.sh

unit: venv
	$(PY) -m pytest -q -m "not integration" tests

lint: venv
	$(VENV)/bin/ruff check controller extensions tests
	$(VENV)/bin/mypy

run: deps
	bash scripts/run.sh

env-up: deps
	@bash scripts/env.sh up

env-down:
	@bash scripts/env.sh down

binaries:
	bash scripts/build-binaries.sh all

bench: deps
	bash scripts/bench.sh

chaos: deps
	bash scripts/test.sh -m chaos

clean:
	rm -rf $(VENV) .venv-runtime .pytest_cache
