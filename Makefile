# The two commands: `make run` starts the whole system on this machine, `make test` runs every test.
# With `make run` going, in another terminal: `make ride`, `make watch`, `make refund`,
# `make outstanding`, `make dlq`, `make replay`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The tools' defaults; override on the command line: make ride RIDER=u2 FARE=9.99
RIDER ?= u1
FARE ?= 25.50
RIDE ?=
AMOUNT ?=
REF ?=
DEVSTACK := $(BIN)/python -m devstack

.PHONY: run ride watch refund outstanding dlq replay reset test lint typecheck pytest install browser clean lock

run: $(STAMP)
	$(DEVSTACK) run $(ARGS)

ride: $(STAMP)
	$(DEVSTACK) ride --user '$(RIDER)' --fare '$(FARE)' $(if $(RIDE),--ride '$(RIDE)')

watch: $(STAMP)
	$(DEVSTACK) watch --user '$(RIDER)'

# make refund RIDE=<a paid rideId> [AMOUNT=5.00]; without AMOUNT, all that remains
refund: $(STAMP)
	$(if $(RIDE),,$(error make refund needs RIDE=<the paid ride's rideId>))
	$(DEVSTACK) refund --ride '$(RIDE)' $(if $(AMOUNT),--amount '$(AMOUNT)')

# make outstanding RIDER=u1: what that rider still owes
outstanding: $(STAMP)
	$(DEVSTACK) outstanding --user '$(RIDER)'

dlq: $(STAMP)
	$(DEVSTACK) dlq list

# make replay REF=0:3 (one dead letter), or REF=all
replay: $(STAMP)
	$(if $(REF),,$(error make replay needs REF=P:O (a ref that make dlq shows) or REF=all))
	$(DEVSTACK) dlq replay $(if $(filter all,$(REF)),--all,--ref '$(REF)')

# Deletes the stack's data and logs (.devstack/), keeps the virtualenv.
reset: $(STAMP)
	$(DEVSTACK) reset

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

pytest: $(STAMP)
	$(BIN)/python -m pytest

lock: $(STAMP)
	$(BIN)/python -m pip install --quiet pip-tools
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes --strip-extras \
	    --allow-unsafe --no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml

# Deletes everything `make` made, the virtualenv included.
clean:
	rm -rf $(VENV) .devstack .mypy_cache .pytest_cache .ruff_cache
