# rewind: the two commands are `make run` and `make test`; everything else is what they call.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NATIVE := $(VENV)/.native
BYTECODE := $(VENV)/.bytecode
PACKAGES := rewind projector replayer snapshotter schemas producers
# What the native build reads (a superset: mypyc rewrites only the C files that changed).
NATIVE_DEPS := setup.py $(wildcard projector/*.py) $(wildcard producers/*.py) $(wildcard schemas/*.py) $(wildcard schemas/*.c) $(wildcard projector/*.c) \
	$(wildcard schemas/*/*.avsc)

.PHONY: setup build test lint typecheck unit unit-fast run kafka-start kafka-stop bench clean

setup: $(STAMP) $(NATIVE) $(BYTECODE)
	@$(BIN)/rewind kafka fetch --quiet
	@$(BIN)/rewind s3 fetch --quiet

# The hot-path modules compiled in place with mypyc (docs/native.md); REWIND_NATIVE=0 skips it.
build: $(NATIVE)

$(NATIVE): $(STAMP) $(NATIVE_DEPS)
	@echo "compiling the native modules (mypyc) ..."
	@$(BIN)/python setup.py build_ext --inplace > $(VENV)/native-build.log 2>&1 \
		|| (cat $(VENV)/native-build.log; echo "native build failed; REWIND_NATIVE=0 builds pure Python"; exit 1)
	@touch $@

# The project's modules byte-compiled ahead: a command (and recovery's helper process) then starts
# without compiling them, also where PYTHONDONTWRITEBYTECODE keeps Python from caching them itself.
$(BYTECODE): $(STAMP) $(NATIVE) $(foreach p,$(PACKAGES),$(wildcard $(p)/*.py $(p)/*/*.py))
	@$(BIN)/python -m compileall -q $(PACKAGES) > /dev/null
	@touch $@

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "rewind needs Python 3.11+ (found %s)" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock
	REWIND_NATIVE=0 $(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q

# The tests that need no broker (seconds): the first tier. `make test` runs both tiers.
unit-fast: setup
	$(BIN)/pytest -q -m "not kafka"

test: setup lint typecheck unit

run: setup
	@$(BIN)/python -m rewind.run_local

kafka-start: setup
	$(BIN)/rewind kafka start

kafka-stop:
	$(BIN)/rewind kafka stop

bench: setup
	$(BIN)/python -m bench.bench_projector

# The screenshots of docs/console.md, over a real service (REWIND_TEST_BOOTSTRAP, or a local broker).
console-screenshots: setup
	$(BIN)/python -m bench.console_screenshots

clean:
	-$(BIN)/rewind kafka stop
	-$(BIN)/rewind s3 stop
	rm -rf $(VENV) .rewind .pytest_cache .mypy_cache .ruff_cache .hypothesis build
	find projector schemas -name '*.so' -delete; rm -f *__mypyc*.so schemas/native_codecs.py
