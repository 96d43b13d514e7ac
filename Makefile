# Two commands set everything up on a fresh machine:
#   make run   - create .venv if missing, install, start the app
#   make test  - create .venv if missing, install runtime + test deps, Debian's chromium
#                (browser tests) and postgresql (the search test's own server), run every test
#   make test-fast - the quick subset for the inner loop (no browser, no slow tests)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: run test test-fast test-e2e bench audit install install-test install-browser install-postgres clean-venv

$(PY):
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Python 3.10+ is needed"'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Stamps re-run pip only when a requirements file changed.
$(VENV)/.runtime: requirements.txt | $(PY)
	$(PIP) install -r requirements.txt
	touch $@

$(VENV)/.test: requirements-test.txt $(VENV)/.runtime
	$(PIP) install -r requirements-test.txt
	touch $@

# The browser test drives Debian's chromium with Playwright (never `playwright install`:
# no download hosts here). The target is the binary itself, so apt runs only when it is
# missing; sudo only when not root and sudo exists. The emoji font is only for legible
# screenshots (the page icons and run states are emoji; without it they draw as boxes).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && echo sudo)

$(CHROMIUM):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium fonts-noto-color-emoji
	$(CHROMIUM) --version

install: $(VENV)/.runtime

install-test: $(VENV)/.test

install-browser: $(CHROMIUM)

# The search test runs its own PostgreSQL server (tests/runs/test_tune_postgres.py): Debian's
# server binaries, installed only when missing (their path carries the major version).
install-postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; }

run: install
	$(PY) -m streamlit run app.py

# One pytest-xdist worker per core; the browser tests run in two groups, each in one worker with its own app
# server (tests/e2e/conftest.py GROUPS).
PYTEST_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --dist loadgroup

test: install-test install-browser install-postgres
	TLAB_E2E_CHROMIUM=$(CHROMIUM) $(PY) -m pytest $(PYTEST_PARALLEL)

# The inner loop: everything but the tests marked slow (real worker processes, torchrun, browsers,
# longer trainings); under 3 minutes on 2 cores. `make test` (and CI) still run everything.
test-fast: install-test
	$(PY) -m pytest $(PYTEST_PARALLEL) -m "not slow and not e2e"

# The browser journey alone (starts the app, trains for real: a few minutes).
test-e2e: install-test install-browser
	TLAB_E2E_CHROMIUM=$(CHROMIUM) $(PY) -m pytest tests/e2e -s

clean-venv:
	rm -rf $(VENV)

$(VENV)/.bench: requirements-bench.txt $(VENV)/.runtime
	$(PIP) install -r requirements-bench.txt
	touch $@

# The CPU benchmarks (about 15 minutes on 2 idle cores), one after the other (bench/all.py); each
# prints its figures, then one table of every row with its target and verdict, the machine, the
# date and the load average. The GPU ones: bench/gpu.sh on a CUDA machine (see bench/RESULTS.md).
bench: install $(VENV)/.bench
	$(PY) bench/all.py

# Known vulnerabilities in the installed packages (.venv's site-packages), from PyPI's
# advisory data: needs the network; not part of `make test`. pip-audit exits 1 when it finds any.
AUDIT_VENV ?= .venv-audit

$(AUDIT_VENV)/.installed: requirements-audit.txt
	$(PYTHON) -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/pip install --quiet -r requirements-audit.txt
	touch $@

audit: install $(AUDIT_VENV)/.installed
	$(AUDIT_VENV)/bin/pip-audit --progress-spinner off --desc on \
		--path "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
