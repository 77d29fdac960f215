# The two commands a newcomer needs: `make run` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench setup clean

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
	@echo "Open http://127.0.0.1:8000/ (customers) and http://127.0.0.1:8000/backoffice/ (staff)."
	@echo "SMS codes appear below as JSON lines (also in var/sms.jsonl). Ctrl-C stops everything."
	@echo
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

# Benchmarks (not CI): needs PostgreSQL and Redis on their local ports. Results in docs/benchmarks.md.
bench: $(STAMP)
	$(BIN)/python -m bench.surge --users $${BENCH_USERS:-200}
	$(BIN)/python -m bench.export --events $${BENCH_EVENTS:-1000000}
