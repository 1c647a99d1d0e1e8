# One task runner. `make test` works from a clean clone: it makes .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEV_STAMP := $(VENV)/.installed-dev
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: install lint typecheck test test-long test-fast test-reliability contracts contracts-check demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,local,embedded]'
	touch $@

install: $(DEV_STAMP)

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(DEV_STAMP)
	$(BIN)/mypy --strict src/lumiku_bgremover

# CI runs this: everything but the `long` tests (minute-long outages, the other crash points,
# the JetStream cluster's node-kill sequence, the real-model demo, the 65,536-entry ZIP).
test: lint typecheck
	$(BIN)/pytest -m "not long"

# What `make test` leaves out (about 20 minutes).
test-long: $(DEV_STAMP)
	$(BIN)/pytest -m long --durations=0

# The whole reliability suite, long faults included (about 15 minutes).
test-reliability: $(DEV_STAMP)
	$(BIN)/pytest tests/reliability -m reliability --durations=0

test-fast: $(DEV_STAMP)
	$(BIN)/pytest tests/unit

contracts: $(DEV_STAMP)
	$(BIN)/python -m lumiku_bgremover.contracts.generate

contracts-check: $(DEV_STAMP)
	$(BIN)/python -m lumiku_bgremover.contracts.generate --check

demo: $(DEMO_STAMP)
	$(BIN)/lumiku-bgremover demo $(PHOTO_DIR)

bench:
	$(PYTHON) bench/run.py $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
