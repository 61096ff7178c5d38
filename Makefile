# Two commands for a fresh machine with Python 3.11:
#   make up     install what is needed and start the platform (embedded default: SQLite)
#   make test   install what is needed and run the whole test suite (lint, types, tests)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

up: $(STAMP)
	$(BIN)/taskroute up

demo: $(STAMP)
	$(BIN)/taskroute demo

lint: $(STAMP)
	$(BIN)/ruff format --check services shared tests
	$(BIN)/ruff check services shared tests
	$(BIN)/mypy services shared tests

test: lint
	$(BIN)/pytest -q -n 3 --dist loadscope

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
