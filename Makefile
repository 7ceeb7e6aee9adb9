# The two commands: `make run` starts the whole system on this machine, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The AsyncAPI specification's JSON Schemas (npm: no PyPI package ships them), for the tests.
CONTRACT_TOOLS := contracts/tools/node_modules/.installed

.PHONY: run test lint typecheck pytest install browser clean lock contract-tools

run: $(STAMP)
	$(BIN)/python -m devstack run

test: $(STAMP) lint typecheck pytest

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) $(CONTRACT_TOOLS)
	$(BIN)/python -m pytest

contract-tools: $(CONTRACT_TOOLS)

$(CONTRACT_TOOLS): contracts/tools/package.json contracts/tools/package-lock.json
	npm ci --prefix contracts/tools --no-audit --no-fund
	touch $@

lock: $(STAMP)
	$(BIN)/python -m pip install --quiet pip-tools
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes --strip-extras \
	    --allow-unsafe --no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) .devstack .mypy_cache .pytest_cache .ruff_cache
