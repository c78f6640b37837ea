# memgen: `make run` (the main job) and `make test` set up .venv themselves, from the lock.
PYTHON ?= python3
TORCH ?= torch==2.13.0
LOCK := requirements.lock
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
ARGS ?=

.PHONY: setup run replicate test test-fast test-latest lock ui bench lint clean

setup: $(STAMP)

# Installs the exact versions of $(LOCK) (torch is $(TORCH), kept out of the lock so that GPU
# users can pick a build). Re-installs only when pyproject.toml, the lock or the torch pin
# changes: seconds when nothing did.
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -c $(LOCK) -e ".[dev]"
	@echo "$(TORCH)" > $(STAMP)

# A different TORCH= than the one installed triggers a reinstall.
ifneq ($(wildcard $(STAMP)),)
ifneq ($(shell cat $(STAMP)),$(TORCH))
.PHONY: $(STAMP)
endif
endif

run: setup
	$(BIN)/memgen run $(ARGS)

replicate: setup
	$(BIN)/memgen replicate $(ARGS)

test: setup
	$(BIN)/python -m pytest $(ARGS)

# The quick loop while editing: no model training, no server, no fuzzing, no GPU (a test that
# trains or serves is marked slow). Every test still runs in `make test`.
test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not fuzz and not gpu" $(ARGS)

# Refresh the lock on purpose: the newest releases that pyproject.toml's ranges admit, resolved
# in a throw-away venv next to $(TORCH), frozen to exact versions. Run `make test` after it.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --upgrade pip
	.venv-lock/bin/python -m pip install -q $(TORCH)
	.venv-lock/bin/python -m pip install -q ".[dev]"
	{ echo "# Exact versions memgen's tests passed with; refresh with 'make lock'."; \
	  echo "# torch is installed separately (make TORCH=...), so it is not pinned here."; \
	  .venv-lock/bin/python -m pip freeze --exclude torch --exclude memgen; } > $(LOCK)
	rm -rf .venv-lock

# An early warning, not part of CI: the newest release of every dependency (no lock) in a
# fresh venv, then the whole suite. Torch stays $(TORCH) (TORCH=torch tries the newest).
test-latest:
	rm -rf .venv-latest && $(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q --upgrade pip
	.venv-latest/bin/python -m pip install -q $(TORCH)
	.venv-latest/bin/python -m pip install -q -e ".[dev]"
	.venv-latest/bin/python -m memgen.environment
	.venv-latest/bin/python -m pytest $(ARGS)

ui: setup
	$(BIN)/memgen ui $(ARGS)

bench: setup
	$(BIN)/python benchmarks/run.py $(ARGS)

# ruff (style and the noqa'd rules), mypy (types of memgen/) and import-linter (each package
# imports only the layers below it: [tool.importlinter] in pyproject.toml). CI runs it first.
lint: setup
	$(BIN)/ruff check memgen tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .venv-latest .venv-lock outputs .pytest_cache
