# fhir-bridge: `make run` serves the bridge on its embedded SQLite database with sample data;
# `make test` lints and runs the test suite. Both create .venv and install what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export FHIR_BRIDGE_DATABASE_URL ?= sqlite:///$(CURDIR)/instance/fhir-bridge.db

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "fhir-bridge needs Python >= 3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/fhir-bridge db upgrade
	$(BIN)/fhir-bridge load sample_bundles --if-empty
	# development mode: requests without a token act as an admin (never set it in production)
	FHIR_BRIDGE_DEV_OPEN_ACCESS=true $(BIN)/fhir-bridge serve --host 127.0.0.1 --port 8080

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest

bench: install
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.auth

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache
