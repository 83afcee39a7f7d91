# Two commands for a fresh machine: `make demo` (the main job, offline) and `make test`.
# Each creates .venv and installs what it needs; torch comes first from constraints.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast test-oldest-sdks bench docs clean

# The capture tests also run against the oldest SDK releases pyproject.toml supports (no torch).
OLDEST_VENV ?= .venv-oldest
OLDEST_SDKS := openai==2.31.0 anthropic==0.108.0
OLDEST_STAMP := $(OLDEST_VENV)/.installed

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/wasteaudit demo $(DEMO_ARGS)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

$(OLDEST_STAMP): pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install -q -c constraints.txt -e . 'pytest>=8' 'pytest-asyncio>=0.24' 'hypothesis>=6.100' 'pyyaml>=6' $(OLDEST_SDKS)
	touch $(OLDEST_STAMP)

test-oldest-sdks: $(OLDEST_STAMP)
	HF_HUB_OFFLINE=1 $(OLDEST_VENV)/bin/python -m pytest -p no:cacheprovider tests/instrumentation tests/test_audit.py tests/reliability/test_fuzz_sdk.py $(PYTEST_ARGS)

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) bench/run_all.py

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build dist .pytest_cache site
