# The two commands: `make run` (the main job on the embedded default) and `make test`.
# Both install uv if it is missing and sync the locked environment first.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
ARGS ?=

.PHONY: run test lint typecheck format bench sync test-tools

$(UV):
	python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv

sync: | $(UV)
	$(UV) sync --locked --all-extras --compile-bytecode

run: sync
	$(UV) run churn pipeline run --serve $(ARGS)

test: sync test-tools lint typecheck
	$(UV) run pytest $(ARGS)

test-tools:
	scripts/test-tools

lint: sync
	$(UV) run ruff check src tests bench
	$(UV) run ruff format --check src tests bench

typecheck: sync
	$(UV) run mypy

format: sync
	$(UV) run ruff format src tests bench
	$(UV) run ruff check --fix src tests bench

bench: sync
	$(UV) run python bench/ingest.py
