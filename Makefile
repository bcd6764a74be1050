# pycable: `make serve` runs the server on its embedded default, `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NODE_STAMP := tests/js/node_modules/.installed
RPC_APP_STAMP := tests/rpc_app/node_modules/.installed
# gRPC code generated from the RPC proto (not committed: it must match the installed
# grpcio/protobuf versions). `make proto` rebuilds it.
PROTO := src/pycable/rpc/anycable.proto
PB    := src/pycable/rpc/_pb/anycable_pb2.py

.PHONY: install proto serve test test-py test-js lint bench bench-peers soak clean

install: $(STAMP) $(PB)

proto: $(PB)

$(PB): $(PROTO) | $(STAMP)
	mkdir -p $(dir $(PB))
	$(BIN)/python -m grpc_tools.protoc -Ipycable/rpc/_pb=src/pycable/rpc --python_out=src --grpc_python_out=src --pyi_out=src $(PROTO)
	echo '"""Generated from anycable.proto by make proto; do not edit."""' > $(dir $(PB))__init__.py

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[uvloop,redis,nats,grpc,dev]'
	touch $(STAMP)

$(NODE_STAMP): tests/js/package.json
	cd tests/js && npm install --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

$(RPC_APP_STAMP): tests/rpc_app/package.json
	cd tests/rpc_app && npm install --no-audit --no-fund --loglevel=error
	touch $(RPC_APP_STAMP)

serve: install
	$(BIN)/pycable --presets=broker --public

test: install $(NODE_STAMP) $(RPC_APP_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install $(NODE_STAMP)
	$(BIN)/python bench/fanout.py
	$(BIN)/python bench/workers.py

# The peer benchmark: its servers' packages (the `bench` extra) are installed here only.
bench-peers: install
	$(BIN)/pip install --quiet -e '.[uvloop,redis,nats,grpc,dev,bench]'
	$(BIN)/python bench/peers.py

# 2,000 clients cut at random for 10 minutes while broadcasts flow (docs/reliability.md).
soak: install
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) tests/js/node_modules tests/rpc_app/node_modules src/pycable/rpc/_pb
