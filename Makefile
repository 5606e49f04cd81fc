# smearscope — the two commands a fresh machine needs:  `make run`  and  `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
HOST    ?= 127.0.0.1
PORT    ?= 8080
DATA    ?= var
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test setup setup-device system-deps lint bench train-shipped sign-shipped clean

# One stamp per set of extras: `make run` needs only the device's, `make test` all of them.
$(BIN)/.installed-%: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[$(subst +,$(comma),$*)]'
	touch $@
comma := ,

setup: $(BIN)/.installed-device+train+hub+dev
setup-device: $(BIN)/.installed-device

## Start the daemon on its embedded defaults: shipped models, replay camera over the bundled sample
## slides, SQLite in ./var, web page on http://127.0.0.1:8080 (Ctrl-C stops it cleanly).
run: setup-device
	$(BIN)/smearscope run --host $(HOST) --port $(PORT) --data-dir $(DATA)

## Lint and run the whole test suite (installs chromium and PostgreSQL from Debian when root) on
## PYTEST_WORKERS pytest-xdist workers (0 = one process, for debugging); each test file runs whole on one
## worker, so a module-scoped fixture is made once; files are handed out in collection order (the files
## with `slow` tests first: tests/conftest.py).
PYTEST_WORKERS ?= 2
test: setup system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

system-deps:
	@bash scripts/system-deps.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/smearscope bench --json benchmarks/results/bench.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

## Re-train and convert the shipped models from ../shared (about 1 h 40 min on 2 idle CPU cores).
train-shipped: setup
	sh training/train_shipped.sh ../shared

## Re-sign the shipped bundles in models/ with the project release key (kept out of the repository).
KEY ?= /work/keys/smearscope-project.key
sign-shipped: setup-device
	BIN=$(BIN) sh scripts/sign-shipped.sh $(KEY) models
