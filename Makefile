# Two promises: `make demo` sets up and runs the demo, `make test` runs every check. Both build the venv.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install test lint typecheck pytest clean demo ui

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip uv
	$(VENV)/bin/uv pip install -q --python $(PY) -e '.[test]'
	touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check airflow_provider_expand tests benchmarks dags
	$(VENV)/bin/ruff format --check airflow_provider_expand tests benchmarks dags

typecheck: install
	$(VENV)/bin/mypy

pytest: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# The example migration end to end on embedded PostgreSQL + Redis (or EXPAND_DEMO_PG_DSN / EXPAND_DEMO_REDIS_URL).
# Every run re-seeds the demo database, so it can run again and again. EXPAND_DEMO_ROWS, EXPAND_DEMO_SOAK tune it.
demo: install
	$(PY) -m airflow_provider_expand.demo run

# Airflow 3 standalone on the same servers, the migration ready to trigger from the UI (EXPAND_DEMO_PORT, 8080).
ui: install
	$(PY) -m airflow_provider_expand.demo ui

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .demo
