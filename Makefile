# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast snapshots bench soak lint clean mutate

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# mypy (pyproject's [tool.mypy]) reads daemon/ as kuloo_daemon through this link: it cannot
# follow setuptools' editable finder.
MYPY := mkdir -p $(VENV)/mypy-path && ln -sfn $(CURDIR)/daemon $(VENV)/mypy-path/kuloo_daemon && $(BIN)/mypy

# pytest-xdist: one worker more than the cores (WORKERS=2, WORKERS=0 to run in this process):
# the end-to-end tests spend much of their time waiting on subprocesses and sockets, so a third
# worker keeps two cores busy (measured here: 4 min 3 s with 3 workers, 5 min 29 s with 2).
# Each worker starts its own sellsim, PostgreSQL server and SMTP sinks (tests/plugins/).
WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) + 1 )))

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MYPY)
	$(BIN)/python -m pytest -n $(WORKERS) $(PYTEST_ARGS)

# Everything but the end-to-end tests (marker e2e: the daemon, kuloo-ctl, sellsim, the demo or
# the TUI as a subprocess): the quick loop while working (goal: under a minute).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(WORKERS) -m "not e2e" $(PYTEST_ARGS)

# After an intended change of a TUI screen: rewrite the snapshots. Always in one process
# (-n0): syrupy cannot update snapshots from pytest-xdist workers.
snapshots: $(STAMP)
	$(BIN)/python -m pytest -n0 tests/tui/test_snapshots.py --snapshot-update

bench: $(STAMP)
	$(BIN)/python -m bench

# Heavy acceptance runs kept out of `make test`, which must stay quick (KULOO_SOAK=1
# enlarges them): the control fuzz, kill -9 at 20 points of an initial sync of 1,000 leads,
# three daemons on PostgreSQL for 60 s instead of 12, and 4,990 contacts entered in Sell at once
# while leads are linked (the conversions listing's read count), and the SIGSTOP trial of
# fencing at 20 random points (a frozen lease holder writes nothing once it wakes).
soak: $(STAMP)
	KULOO_SOAK=1 $(BIN)/python -m pytest -q -s tests/control/test_control_abuse.py -k fuzz
	KULOO_SOAK=1 $(BIN)/python -m pytest -q -s tests/links/test_abuse.py -k forged
	KULOO_SOAK=1 $(BIN)/python -m pytest -q -s tests/links/test_slow_bodies.py -k trickling
	KULOO_SOAK=1 $(BIN)/python -m pytest -q tests/sync/test_sync_resilience_e2e.py $(PYTEST_ARGS)
	KULOO_SOAK=1 $(BIN)/python -m pytest -q -s tests/sync/test_multi_daemon_e2e.py $(PYTEST_ARGS)
	KULOO_SOAK=1 $(BIN)/python -m pytest -q -s tests/sync/test_conversion_cost.py -k bulk $(PYTEST_ARGS)
	KULOO_SOAK=1 $(BIN)/python -m pytest -q -s tests/sync/test_backup_e2e.py $(PYTEST_ARGS)
	KULOO_SOAK=1 $(BIN)/python -m pytest -q -s tests/sync/test_fence_e2e.py $(PYTEST_ARGS)

# DEMO_ARGS: --reset (start over), --no-tui (no TUI; Ctrl-C stops), --state DIR.
demo: $(STAMP)
	$(BIN)/python scripts/demo.py $(DEMO_ARGS)

# Mutation testing, one module at a time with one worker (slow; not part of `make test`).
# The module list and each module's tests live in scripts/mutate.py.
$(VENV)/.mutate: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,mutate]'
	touch $@

mutate: $(VENV)/.mutate
	$(BIN)/python scripts/mutate.py $(MUTATE_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MYPY)

clean:
	rm -rf $(VENV) demo-state .pytest_cache
