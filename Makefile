# swf-pool: `make run` shows the demo on an embedded SQLite file; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNTIME := $(VENV)/.runtime

.PHONY: all install run test torture lint format mypy bench bench-quick bench-peers clean

all: lint mypy test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# psycopg's C build (measured: several times less coordinator CPU per run than pure Python)
	@# needs a compiler and libpq headers; without them the binary wheel, always installed, serves.
	$(BIN)/python -m pip install -q -e '.[c,dev,api,plots]' || { \
	  echo "swf-pool: psycopg[c] could not be built here (no compiler or libpq headers);" \
	       "using psycopg's binary build"; \
	  $(BIN)/python -m pip install -q -e '.[dev,api,plots]'; }
	touch $(STAMP) $(RUNTIME)

# what the demo needs, and no more (the whole toolchain above is for tests and benchmarks)
$(RUNTIME): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e .
	touch $(RUNTIME)

install: $(STAMP)

run: $(RUNTIME)
	rm -f demo.db demo.db-wal demo.db-shm
	$(BIN)/swf-pool demo --dsn sqlite://demo.db

test: $(STAMP)
	$(BIN)/python -m pytest

# The torture suite at full size: 50,000 runs under a kill storm, database faults, lease
# races, the bad-input matrix with 1,000 fuzzed examples, a soak of 1,000,000 runs.
# (`make test` runs all of it at a small size.)
torture: $(STAMP)
	SWF_TORTURE=full $(BIN)/python -m pytest tests/torture -s -o timeout=1800 -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check swf_pool tests bench examples
	$(BIN)/ruff format --check swf_pool tests bench examples

format: $(STAMP)
	$(BIN)/ruff format swf_pool tests bench examples
	$(BIN)/ruff check --fix swf_pool tests bench examples

mypy: $(STAMP)
	$(BIN)/mypy

# Benchmarks print JSON lines and markdown rows; they assert nothing about time.
# SWF_BENCH_DSN picks the server (default: the PostgreSQL on 127.0.0.1).
bench: $(STAMP)
	$(BIN)/python -m bench.enqueue
	$(BIN)/python -m bench.drain
	$(BIN)/python -m bench.latency
	$(BIN)/python -m bench.contention
	$(BIN)/python -m bench.scaling
	$(BIN)/python -m bench.table_size
	$(BIN)/python -m bench.remote
	$(BIN)/python -m bench.wakeup
	$(BIN)/python -m pytest bench -m bench --benchmark-only -p no:cacheprovider
	$(BIN)/python -m bench.report

bench-quick: $(STAMP)
	$(BIN)/python -m bench.enqueue --quick
	$(BIN)/python -m bench.drain --quick
	$(BIN)/python -m bench.latency --quick
	$(BIN)/python -m bench.contention --quick
	$(BIN)/python -m bench.scaling --quick
	$(BIN)/python -m bench.table_size --quick
	$(BIN)/python -m bench.remote --quick
	$(BIN)/python -m bench.wakeup --quick
	$(BIN)/python -m bench.report --quick

# swf-pool against PgQueuer on the same database (an optional extra; not part of `make bench`)
bench-peers: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[peers]'
	$(BIN)/python -m bench.peers

clean:
	rm -rf $(VENV) demo.db demo.db-wal demo.db-shm .pytest_cache .mypy_cache .ruff_cache
