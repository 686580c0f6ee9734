# The two commands a newcomer needs: `make run` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   ?= data

.PHONY: run test lint typecheck install browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch from this machine's disk first, so no requirement can pull a CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Start the whole service on the embedded default: API on 127.0.0.1:8000, one worker,
## state and blobs under $(DATA)/. Ctrl-C stops everything.
run: $(STAMP)
	mkdir -p $(DATA)
	$(BIN)/c3 serve --data-dir $(DATA)

## Headless Chromium for the dashboard's browser tests (Debian's package, never a download).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

## Lint, type-check and the whole test suite.
test: $(STAMP) browser lint typecheck
	$(BIN)/pytest -q
