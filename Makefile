# memgen: `make run` (the main job) and `make test` set up .venv themselves.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
ARGS ?=

.PHONY: setup run test ui bench lint clean

setup: $(STAMP)

# Re-installs only when pyproject.toml or the torch pin changes: seconds when nothing did.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	@echo "$(TORCH)" > $(STAMP)

# A different TORCH= than the one installed triggers a reinstall.
ifneq ($(wildcard $(STAMP)),)
ifneq ($(shell cat $(STAMP)),$(TORCH))
.PHONY: $(STAMP)
endif
endif

run: setup
	$(BIN)/memgen run $(ARGS)

test: setup
	$(BIN)/python -m pytest $(ARGS)

ui: setup
	$(BIN)/memgen ui $(ARGS)

bench: setup
	$(BIN)/python benchmarks/run.py $(ARGS)

lint: setup
	$(BIN)/ruff check memgen tests benchmarks

clean:
	rm -rf $(VENV) outputs .pytest_cache
