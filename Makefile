# atelier: `make search` runs a short real search on Fashion-MNIST; `make test` runs the test suite.
# Both set up what they need first: a virtual environment, the project, and the data.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FASHION := /usr/share/datasets/fashion-mnist

# `make search`: a short search, its two best configurations trained longer side by side, their ensemble
# promoted; 7.5 minutes of budget, within 10 minutes with the set-up (2 minutes) on 2 CPU cores.
SEARCH_ARGS ?= --objective fashion-mnist-quick --budget 7.5m --model-name fashion-mnist

# The two-hour search for the best model: search, finalists trained longer, their ensemble, promoted.
BEST_ARGS ?= --objective fashion-mnist-best --budget 2h --model-name fashion-mnist

.PHONY: setup data search print-search-args best test check lint clean

setup: $(VENV)/.installed data

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# Debian's dataset-fashion-mnist puts the canonical IDX gz files in $(FASHION).
data:
	@if [ ! -f $(FASHION)/train-images-idx3-ubyte.gz ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	  elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
	    sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	  else \
	    echo "note: $(FASHION) is missing and apt-get is not usable; atelier will try ~/.keras/datasets"; \
	  fi; \
	fi

search: setup
	$(BIN)/atelier best $(SEARCH_ARGS)

print-search-args:  # for benchmarks/make_search.sh
	@echo $(SEARCH_ARGS)

best: setup
	$(BIN)/atelier best $(BEST_ARGS)

test: setup
	$(BIN)/pytest -q --durations=30  # the slowest tests and fixtures, to keep the suite under 10 minutes

# The fast tier: everything but the end-to-end tests (marked e2e: searches trained through the command line,
# servers, the browser, killed processes, the bench); under 2 minutes on 2 CPU cores.
check: setup
	$(BIN)/pytest -q -m "not e2e"

# The linter and formatter CI runs before the tests (settings in pyproject.toml).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf mlruns/*.db mlruns/*.journal mlruns/artifacts
