# Two commands set everything up on a fresh machine:
#   make run   - create .venv if missing, install, start the app
#   make test  - create .venv if missing, install runtime + test deps, run every test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: run test bench install install-test clean-venv

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

install: $(VENV)/.runtime

install-test: $(VENV)/.test

run: install
	$(PY) -m streamlit run app.py

test: install-test
	$(PY) -m pytest

clean-venv:
	rm -rf $(VENV)

bench: install
	$(PY) bench/store_overhead.py
	$(PY) bench/side_by_side.py
