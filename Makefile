# Hopper: the two set-up commands are `make run` and `make test`; both install what is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck pytest chaos clean screenshots

install: $(STAMP)
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server not found: installing it with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	@test -x /usr/bin/chromium || { \
	  echo "chromium not found: installing it with apt-get (the dashboard's browser tests)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

$(STAMP): pyproject.toml client/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/hopper run $(ARGS)

lint: install
	$(BIN)/ruff check broker client tests chaos bench
	$(BIN)/ruff format --check broker client tests chaos bench

typecheck: install
	@mkdir -p .typecheck && ln -sfn ../broker .typecheck/hopper_broker && ln -sfn ../client .typecheck/hopper_client
	$(BIN)/mypy

# The suite runs in TEST_WORKERS processes (pytest-xdist; most tests wait on sockets and
# timers: 3 keep 2 cores about 75 % busy, 4 nearly full), each with its own redis-server; then
# the tests that measure rates against the wall clock (marker `timing`) run alone.
# TEST_WORKERS=0: one process.
# Bytecode is cached even where the environment says not to (PYTHONDONTWRITEBYTECODE): the
# suites start hundreds of Python processes (brokers, `hopper` commands), and each would
# compile the project's modules again.
TEST_WORKERS ?= 4
pytest: install
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not timing"
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -q -m timing

test: lint typecheck pytest

# The reliability suite with its long fault, fuzz and load runs (< 15 min); fails on any loss.
chaos: install
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m chaos

# The dashboard's screenshots in docs/screenshots, taken by its browser test (docs/dashboard.md).
screenshots: install
	HOPPER_SCREENSHOTS=docs/screenshots $(BIN)/pytest -q -p no:cacheprovider tests/test_dashboard_browser.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .typecheck

# The benchmark harness (issue 6), in its own virtualenv so the peers' dependencies never
# touch .venv: `make bench` (about 12 minutes), `make bench ARGS=--quick` (about 1 minute).
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

.PHONY: bench

$(BENCH_STAMP): bench/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --upgrade pip
	$(BENCH_VENV)/bin/pip install -q -r bench/requirements.txt
	$(BENCH_VENV)/bin/pip install -q --no-deps -e .
	touch $(BENCH_STAMP)

bench: install $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python -m bench $(ARGS)
