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

.PHONY: install proto serve demo chromium test test-py test-js lint bench bench-peers clean

# The chat demo (examples/chat): its page loads only @anycable/web bundled here by esbuild.
CHAT        := examples/chat
CHAT_STAMP  := $(CHAT)/node_modules/.installed
CHAT_BUNDLE := $(CHAT)/static/chat.js
# make demo's ports and the environment both processes read (override: make demo DEMO_APP_PORT=9000).
DEMO_HOST       ?= 127.0.0.1
DEMO_APP_PORT   ?= 8000
DEMO_CABLE_PORT ?= 8080

install: $(STAMP) $(PB) $(CHAT_BUNDLE)

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

$(CHAT_STAMP): $(CHAT)/package.json $(CHAT)/package-lock.json
	cd $(CHAT) && npm ci --no-audit --no-fund --loglevel=error
	touch $(CHAT_STAMP)

$(CHAT_BUNDLE): $(CHAT_STAMP) $(CHAT)/src/chat.js
	cd $(CHAT) && npm run -s build

# Debian's chromium for the browser test (tests/examples/test_chat_browser.py). Installed when
# missing and root + apt-get are available; elsewhere the test is skipped and says why.
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "chromium is missing and cannot be installed here (needs root and apt-get): the browser test will be skipped"; fi

demo: install
	$(BIN)/python -m examples.chat.demo --host $(DEMO_HOST) --app-port $(DEMO_APP_PORT) --cable-port $(DEMO_CABLE_PORT)

serve: install
	$(BIN)/pycable --presets=broker --public

test: install chromium $(NODE_STAMP) $(RPC_APP_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check src tests examples
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install $(NODE_STAMP)
	$(BIN)/python bench/fanout.py
	$(BIN)/python bench/workers.py

# The peer benchmark: its servers' packages (the `bench` extra) are installed here only.
bench-peers: install
	$(BIN)/pip install --quiet -e '.[uvloop,redis,nats,grpc,dev,bench]'
	$(BIN)/python bench/peers.py

clean:
	rm -rf $(VENV) tests/js/node_modules tests/rpc_app/node_modules src/pycable/rpc/_pb $(CHAT)/node_modules $(CHAT_BUNDLE)
