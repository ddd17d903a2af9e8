# Fresh-machine entry points: `make study` (the main job) and `make test` (the fast suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/bzoo: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0   # the CPU wheel; an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/bzoo

study: install
	$(BIN)/bzoo study --overwrite

test: install
	$(BIN)/python -m pytest

test-slow: install
	$(BIN)/python -m pytest -m slow

.PHONY: install study test test-slow
