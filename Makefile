# The two commands a newcomer needs: `make run` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   ?= data

.PHONY: run test lint typecheck install tools sandbox

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
run: $(STAMP) sandbox
	mkdir -p $(DATA)
	$(BIN)/c3 serve --data-dir $(DATA)

## Debian packages the tests drive: Chromium (browser tests, never a downloaded browser),
## docker-compose (validates docker-compose.yml; no engine needed), redis-server,
## bubblewrap (the validation sandbox's namespaces), curl and jq (the README's walk-through),
## and shellcheck (bench/gpu_smoke.sh).
tools:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	command -v jq >/dev/null || missing="$$missing jq"; \
	command -v shellcheck >/dev/null || missing="$$missing shellcheck"; \
	if [ -n "$$missing" ]; then apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; fi

## bubblewrap isolates the validation of uploads (no network, a read-only filesystem); without
## it uploads are still validated in a resource-limited child process, and the log says so.
sandbox:
	@if ! command -v bwrap >/dev/null; then \
		(apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null) \
		|| echo "bubblewrap is not installed: uploads are validated without namespaces"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

## Lint, type-check and the whole test suite.
test: $(STAMP) tools lint typecheck
	$(BIN)/pytest -q
