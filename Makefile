# flask-push: `make test` runs the whole suite, `make demo` the demo storefront.
# Both set up a local virtualenv in .venv from nothing.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test demo lint bench-inbox bench-registration clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# web-push-testing: an outside Web Push service the tests check our sender against
PEERS := tests/peers/node_modules/.installed
$(PEERS): tests/peers/package.json tests/peers/package-lock.json
	npm ci --prefix tests/peers --no-audit --no-fund
	touch $@

# The suite in four processes (pytest-xdist): much of its time is spent waiting on
# browsers, push services, worker processes and databases: on two cores, four
# processes ran it in 10 minutes where two took 12, and still left the CPU idle a
# third of the time.
# `make test TEST_WORKERS=0` runs it in one process. Idle processes take tests queued
# for busy ones (worksteal): with the plain split, the last minute ran on fewer
# processes (9 min 16 s against 10 min 12 s for the same tree, one run each).
TEST_WORKERS ?= 4

# Bytecode is written even where PYTHONDONTWRITEBYTECODE is set: without it each of
# the four processes, and each process a test starts, compiles its imports again
# (pytest's rewrite of its plugins' packages alone doubled collection, 9 s to 17 s).
test: $(VENV)/.installed $(PEERS)
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check flask_push tests bench demo
	$(VENV)/bin/ruff format --check flask_push tests bench demo
	$(VENV)/bin/mypy

bench-inbox: $(VENV)/.installed
	$(PY) bench/inbox.py

bench-registration: $(VENV)/.installed
	$(PY) bench/registration.py

# The demo storefront on http://127.0.0.1:5000 (`make demo PORT=5001` elsewhere):
# database, VAPID keys and seed data in instance/ (kept for the next run), fake FCM
# and APNs services, in-process workers.
PORT ?= 5000
demo: $(VENV)/.installed
	$(PY) -m demo --port $(PORT)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache tests/peers/node_modules
