# pycable: `make serve` runs the server on its embedded default, `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NODE_STAMP := tests/js/node_modules/.installed

.PHONY: install serve test test-py test-js lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[uvloop,redis,nats,grpc,dev]'
	touch $(STAMP)

$(NODE_STAMP): tests/js/package.json
	cd tests/js && npm install --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

serve: install
	$(BIN)/pycable --presets=broker --public

test: install $(NODE_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/mypy

bench: install $(NODE_STAMP)
	$(BIN)/python bench/fanout.py

clean:
	rm -rf $(VENV) tests/js/node_modules
