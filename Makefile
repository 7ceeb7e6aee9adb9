# The two commands: `make run` starts the whole system on this machine, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The AsyncAPI specification's JSON Schemas (npm: no PyPI package ships them), for the tests.
CONTRACT_TOOLS := contracts/tools/node_modules/.installed
# The generators that render contracts/*.yaml as HTML (make docs).
DOCS_TOOLS := contracts/docs-tools/node_modules/.installed
DOCS := build/docs

.PHONY: run test lint typecheck pytest install browser clean lock contract-tools docs

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

docs: $(DOCS_TOOLS)
	node contracts/docs-tools/render-asyncapi.cjs contracts/asyncapi.yaml $(DOCS)/asyncapi
	REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true contracts/docs-tools/node_modules/.bin/redocly \
	    build-docs contracts/openapi.yaml --output $(DOCS)/openapi.html
	@echo "docs: $(DOCS)/asyncapi/index.html $(DOCS)/openapi.html"

# puppeteer comes along (for PDF output, unused here): it must not download a browser.
$(DOCS_TOOLS): contracts/docs-tools/package.json contracts/docs-tools/package-lock.json
	PUPPETEER_SKIP_DOWNLOAD=1 npm ci --prefix contracts/docs-tools --no-audit --no-fund
	touch $@

lock: $(STAMP)
	$(BIN)/python -m pip install --quiet pip-tools
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes --strip-extras \
	    --allow-unsafe --no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) .devstack .mypy_cache .pytest_cache .ruff_cache
	rm -rf contracts/tools/node_modules contracts/docs-tools/node_modules $(DOCS)
