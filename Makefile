# atelier: `make search` runs a short real search on Fashion-MNIST; `make test` runs the test suite.
# Both set up what they need first: a virtual environment, the project, and the data.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FASHION := /usr/share/datasets/fashion-mnist

# The search that `make search` runs, then promotes: fits in 10 minutes on 2 CPU cores.
SEARCH_ARGS ?= --objective fashion-mnist-quick
PROMOTE_ARGS ?= --study fashion-mnist-quick-cnn-fast --model-name fashion-mnist

.PHONY: setup data search test check lint clean

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
	$(BIN)/atelier run $(SEARCH_ARGS)
	$(BIN)/atelier promote $(PROMOTE_ARGS)

test: setup
	$(BIN)/pytest -q

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
