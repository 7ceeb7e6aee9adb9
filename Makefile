# The two commands: `make run` starts the whole system on this machine, `make test` runs every test.
# With `make run` going, in another terminal: `make ride`, `make watch`, `make refund`,
# `make outstanding`, `make dlq`, `make replay`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Every package comes from a lock with hashes: uv from requirements-uv.lock (into .uv), then the
# rest from requirements-run.lock (make run) or requirements-test.lock (make test); the image
# installs requirements.lock. Nothing is resolved at install time.
UV := .uv/bin/uv
export UV_PYTHON_DOWNLOADS := never
INTO_VENV := --quiet --python $(BIN)/python
# make run needs the services and the embedded parts; make test adds the test tools.
STAMP := $(VENV)/.run-installed
TEST_STAMP := $(VENV)/.test-installed
# The AsyncAPI specification's JSON Schemas (npm: no PyPI package ships them), for the tests.
CONTRACT_TOOLS := contracts/tools/node_modules/.installed
# The generators that render contracts/*.yaml as HTML (make docs).
DOCS_TOOLS := contracts/docs-tools/node_modules/.installed
DOCS := build/docs

# The tools' defaults; override on the command line: make ride RIDER=u2 FARE=9.99
RIDER ?= u1
FARE ?= 25.50
RIDE ?=
AMOUNT ?=
REF ?=
TOPIC ?=
DEVSTACK := $(BIN)/python -m devstack

.PHONY: run ride watch refund outstanding dlq replay reset test check-lock lint typecheck pytest install browser clean lock \
	contract-tools docs

run: $(STAMP)
	$(DEVSTACK) run $(ARGS)

ride: $(STAMP)
	$(DEVSTACK) ride --user '$(RIDER)' --fare '$(FARE)' $(if $(RIDE),--ride '$(RIDE)')

watch: $(STAMP)
	$(DEVSTACK) watch --user '$(RIDER)'

# make refund RIDE=<a paid rideId> [AMOUNT=5.00]; without AMOUNT, all that remains. Warns of
# what the consumer will refuse, then waits for what became of the request.
refund: $(STAMP)
	$(if $(RIDE),,$(error make refund needs RIDE=<the paid ride's rideId>))
	$(DEVSTACK) refund --ride '$(RIDE)' $(if $(AMOUNT),--amount '$(AMOUNT)')

# make outstanding RIDER=u1: what that rider still owes
outstanding: $(STAMP)
	$(DEVSTACK) outstanding --user '$(RIDER)'

# make dlq: the dead letters of both topics; TOPIC=rides (payment-events-dlq) or
# TOPIC=refunds (refund-requests-dlq) for one
dlq: $(STAMP)
	$(DEVSTACK) dlq list $(if $(TOPIC),--topic '$(TOPIC)')

# make replay REF=refunds:0:3 (refs as make dlq shows them, space-separated), or REF=all
# [TOPIC=rides|refunds]
replay: $(STAMP)
	$(if $(REF),,$(error make replay needs REF=<a ref that make dlq shows, e.g. refunds:0:3> or REF=all))
	$(DEVSTACK) dlq replay $(if $(TOPIC),--topic '$(TOPIC)') \
	    $(if $(filter all,$(REF)),--all,$(foreach ref,$(REF),--ref '$(ref)'))

# Deletes the stack's data and logs (.devstack/), keeps the virtualenv.
reset: $(STAMP)
	$(DEVSTACK) reset

test: $(TEST_STAMP) check-lock lint typecheck pytest

install: $(TEST_STAMP)

# With the Python's own pip when it has one (3 s); else a virtualenv's (10 s).
$(UV): requirements-uv.lock
	rm -rf .uv
	PIP_ROOT_USER_ACTION=ignore $(PYTHON) -m pip $(INSTALL_UV) 2>/dev/null \
	    || { $(PYTHON) -m venv .uv/pip && .uv/pip/bin/pip $(INSTALL_UV); }
	touch $@
INSTALL_UV := install --quiet --disable-pip-version-check --no-input --require-hashes --no-deps \
	--target .uv -r requirements-uv.lock

$(BIN)/python: | $(UV)
	$(UV) venv --quiet --python $(PYTHON) $(VENV)

# install, not sync: a later make run keeps the test tools that make test installed.
$(STAMP): $(UV) requirements-run.lock | $(BIN)/python
	$(UV) pip install $(INTO_VENV) --require-hashes -r requirements-run.lock
	touch $@

$(TEST_STAMP): $(UV) requirements-test.lock | $(BIN)/python
	$(UV) pip sync $(INTO_VENV) --require-hashes requirements-test.lock
	touch $@ $(STAMP)

# Each lock is one resolution of pyproject.toml, what it holds named by the groups.
LOCKS := requirements.lock requirements-run.lock requirements-test.lock
GROUPS_requirements.lock :=
GROUPS_requirements-run.lock := --group pyproject.toml:local
GROUPS_requirements-test.lock := --group pyproject.toml:local --group pyproject.toml:test
COMPILE := $(UV) pip compile pyproject.toml --universal --generate-hashes --quiet \
	--custom-compile-command "make lock"
LOCK_CHECK := build/lock-check

# The locks are what pyproject.toml resolves to, given their own pins (make lock makes them so).
check-lock: $(UV)
	@mkdir -p $(LOCK_CHECK)
	@for lock in $(LOCKS); do \
	    cp $$lock $(LOCK_CHECK)/$$lock; \
	done
	$(foreach lock,$(LOCKS),$(COMPILE) $(GROUPS_$(lock)) -o $(LOCK_CHECK)/$(lock) &&) true
	@for lock in $(LOCKS); do \
	    cmp -s $$lock $(LOCK_CHECK)/$$lock || { echo "$$lock does not match pyproject.toml: run make lock"; exit 1; }; \
	done

lint: $(TEST_STAMP)
	$(BIN)/ruff check .

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

pytest: $(TEST_STAMP) $(CONTRACT_TOOLS)
	$(BIN)/python -m pytest

contract-tools: $(CONTRACT_TOOLS)

$(CONTRACT_TOOLS): contracts/tools/package.json contracts/tools/package-lock.json
	npm ci --prefix contracts/tools --no-audit --no-fund
	touch $@

# Both pages carry their scripts (--inlineBundle: Redoc's, from the CLI's package instead of
# its CDN), so they work offline.
docs: $(DOCS_TOOLS)
	node contracts/docs-tools/render-asyncapi.cjs contracts/asyncapi.yaml $(DOCS)/asyncapi
	REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true contracts/docs-tools/node_modules/.bin/redocly \
	    build-docs contracts/openapi.yaml --inlineBundle --output $(DOCS)/openapi.html
	@echo "docs: $(DOCS)/asyncapi/index.html $(DOCS)/openapi.html"

# puppeteer comes along (for PDF output, unused here): it must not download a browser.
$(DOCS_TOOLS): contracts/docs-tools/package.json contracts/docs-tools/package-lock.json
	PUPPETEER_SKIP_DOWNLOAD=1 npm ci --prefix contracts/docs-tools --no-audit --no-fund
	touch $@

# Moves the locks forward: the test lock to the newest versions pyproject.toml allows, then the
# others from its pins. To move one package only: make lock ARGS='--upgrade-package redis'.
lock: $(UV)
	$(COMPILE) $(GROUPS_requirements-test.lock) $(or $(ARGS),--upgrade) -o requirements-test.lock
	cp requirements-test.lock requirements-run.lock
	$(COMPILE) $(GROUPS_requirements-run.lock) -o requirements-run.lock
	cp requirements-test.lock requirements.lock
	$(COMPILE) $(GROUPS_requirements.lock) -o requirements.lock

# Deletes everything `make` made, the virtualenv included.
clean:
	rm -rf $(VENV) .uv .devstack .mypy_cache .pytest_cache .ruff_cache
	rm -rf contracts/tools/node_modules contracts/docs-tools/node_modules $(DOCS)
