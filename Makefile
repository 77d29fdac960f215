# The two commands a newcomer needs: `make run` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Ports for `make run` (WEB_PORT=8100 CORE_PORT=8101 make run). The worker reaches the simulator
# at CORE_API_URL, derived from CORE_PORT unless set explicitly (e.g. to a real core).
WEB_PORT ?= 8000
CORE_PORT ?= 8001
CORE_API_URL ?= http://127.0.0.1:$(CORE_PORT)

.PHONY: run test lint format bench bench-risk fleet setup clean openapi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	mkdir -p var
	$(BIN)/python manage.py migrate --noinput -v0
	$(BIN)/python manage.py compilemessages -v0 --ignore=.venv
	$(BIN)/python manage.py seed_demo
	@echo
	@echo "Open http://localhost:$(WEB_PORT)/ (customers) and http://localhost:$(WEB_PORT)/backoffice/ (staff)."
	@echo "(localhost, not 127.0.0.1: browsers offer passkeys on a domain only.)"
	@echo "The worker sends activations to the core at $(CORE_API_URL)."
	@echo "SMS codes appear below as JSON lines (also in var/sms.jsonl). Ctrl-C stops everything."
	@echo
	WEB_PORT=$(WEB_PORT) CORE_PORT=$(CORE_PORT) CORE_API_URL=$(CORE_API_URL) \
		WEBAUTHN_ORIGINS=$${WEBAUTHN_ORIGINS:-http://localhost:$(WEB_PORT)} \
		$(BIN)/honcho -f Procfile.dev start

# Strict mode (TEST_STRICT=1, as in CI) turns a missing service or browser into a failure.
test: $(STAMP)
	$(BIN)/python manage.py compilemessages -v0 --ignore=.venv
	$(BIN)/python -m pytest -n $${TEST_WORKERS:-2} $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf var .pytest_cache

# The OpenAPI document, checked in; api/tests/test_openapi.py fails when it differs from the code.
openapi: $(STAMP)
	$(BIN)/python manage.py spectacular --lang en --validate --fail-on-warn --file docs/openapi.yaml

# Benchmarks (not CI): needs PostgreSQL and Redis on their local ports. Results in docs/benchmarks.md.
bench: $(STAMP)
	$(BIN)/python -m bench.surge --users $${BENCH_USERS:-200}
	$(BIN)/python -m bench.export --events $${BENCH_EVENTS:-1000000}
	$(BIN)/python -m bench.monitoring --cases $${BENCH_MONITORING_CASES:-1000000}
	$(BIN)/python -m bench.backoffice --cases $${BENCH_BACKOFFICE_CASES:-1000000}
	$(BIN)/python -m bench.api_status --clients 50 --requests 40
	$(BIN)/python -m bench.statements --customers 3
	$(BIN)/python -m bench.risk_traffic --seed 11 --customers $${BENCH_RISK_CUSTOMERS:-400}

# The risk checkpoint's labelled synthetic traffic alone (PostgreSQL only; see docs/risk.md).
bench-risk: $(STAMP)
	$(BIN)/python -m bench.risk_traffic --seed 11 --customers $${BENCH_RISK_CUSTOMERS:-400}

# The fleet on this machine (HAProxy, two web and two worker nodes, two beats, PgBouncer, the core
# simulator; the machine's PostgreSQL, Redis and RabbitMQ) under node failures: docs/deploy.md.
# It restarts the machine's Redis and PostgreSQL; FLEET_ARGS="--redis flush --postgres terminate"
# leaves them running. `make test` runs the short version (tests/test_fleet.py).
fleet: $(STAMP)
	$(BIN)/python -m bench.fleet --customers $${FLEET_CUSTOMERS:-300} $(FLEET_ARGS)
