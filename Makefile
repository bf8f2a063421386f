# rewind: the two commands are `make run` and `make test`; everything else is what they call.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test lint typecheck unit run kafka-start kafka-stop bench clean

setup: $(STAMP)
	@$(BIN)/rewind kafka fetch --quiet

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "rewind needs Python 3.11+ (found %s)" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q

test: setup lint typecheck unit

run: setup
	@$(BIN)/python -m rewind.run_local

kafka-start: setup
	$(BIN)/rewind kafka start

kafka-stop:
	$(BIN)/rewind kafka stop

bench: setup
	$(BIN)/python -m bench.bench_projector

clean:
	-$(BIN)/rewind kafka stop
	rm -rf $(VENV) .rewind .pytest_cache .mypy_cache .ruff_cache .hypothesis
