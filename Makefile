# fhir-bridge: `make run` serves the bridge on its embedded SQLite database with sample data;
# `make test` lints and runs the test suite. Both create .venv and install what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export FHIR_BRIDGE_DATABASE_URL ?= sqlite:///$(CURDIR)/instance/fhir-bridge.db

# The interop tests' partner FHIR server (tests/interop/medplum_peer: Medplum's FHIR logic on Node)
PEER       := tests/interop/medplum_peer
PEER_STAMP := $(PEER)/node_modules/.package-lock.json

.PHONY: install run test lint mutate bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "fhir-bridge needs Python >= 3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# npm ci writes node_modules/.package-lock.json: reinstall when the lock file is newer. Without
# npm this only warns and the peer's tests skip, except under CI=true, where both fail.
$(PEER_STAMP): $(PEER)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix $(PEER) --no-audit --no-fund --loglevel=error; \
	elif [ "$$CI" = "true" ]; then \
		echo "npm not found: Node.js >= 20 is needed for the interop tests" >&2; exit 1; \
	else \
		echo "npm not found: the Medplum interop peer is not installed (its tests will skip)" >&2; \
	fi

install: $(STAMP) $(PEER_STAMP)

# the clinic console's development logins (created only when absent; never use them anywhere real)
DEV_ADMIN_PASSWORD ?= dev-admin-password
DEV_DESK_PASSWORD  ?= dev-desk-password

run: install
	$(BIN)/fhir-bridge db upgrade
	$(BIN)/fhir-bridge load sample_bundles --if-empty
	$(BIN)/fhir-bridge demo-data sample_bundles --if-empty
	@echo '$(DEV_ADMIN_PASSWORD)' | $(BIN)/fhir-bridge users add dev-admin --name "Dev Admin" \
		--role clinic-admin --password-stdin --if-absent >/dev/null
	@echo '$(DEV_DESK_PASSWORD)' | $(BIN)/fhir-bridge users add dev-desk --name "Dev Front Desk" \
		--role front-desk --password-stdin --if-absent >/dev/null
	@echo "Clinic console: http://127.0.0.1:8080/"
	@echo "  development logins: dev-admin / $(DEV_ADMIN_PASSWORD) (clinic admin), dev-desk / $(DEV_DESK_PASSWORD) (front desk)"
	# development mode: requests without a token act as an admin (never set it in production)
	FHIR_BRIDGE_DEV_OPEN_ACCESS=true $(BIN)/fhir-bridge serve --host 127.0.0.1 --port 8080

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache --no-logo

test: lint
	$(BIN)/pytest

# mutation testing of the pure core listed under [tool.mutmut] in pyproject.toml: fails when any
# mutant survives (a behaviour no test pins down); `mutmut show NAME` prints the surviving change
mutate: install
	rm -rf mutants
	@# pure unit tests only: the CI guard "a PostgreSQL test must have run" is the full suite's
	env -u CI $(BIN)/mutmut run >/dev/null
	@survivors=$$($(BIN)/mutmut results | grep -v ': killed$$' || true); \
	if [ -n "$$survivors" ]; then echo "mutants left alive:"; echo "$$survivors"; exit 1; fi; \
	echo "mutation testing: every mutant killed ($$($(BIN)/mutmut results --all true | grep -c ': killed$$'))"

# every suite runs even when an earlier one misses its goal; the exit status says if any did
bench: install
	@status=0; \
	$(BIN)/python -m bench.run || status=1; \
	$(BIN)/python -m bench.auth || status=1; \
	$(BIN)/python -m bench.deliveries || status=1; \
	$(BIN)/python -m bench.progress_report || status=1; \
	$(BIN)/python -m bench.console || status=1; \
	exit $$status

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache $(PEER)/node_modules
