# The two commands a newcomer needs: `make demo` (the main job on embedded defaults) and `make test`.
# Both create the project-local virtual environment on first use and reinstall when a pyproject.toml changes.
# They install the provider and the repository's tooling (tools/: emulator, demo, benchmarks).
# The suite runs in two processes, a test file each at a time: most of its time is real Airflow components
# starting and waiting on each other, so two files side by side use the 2 cores the budget counts.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint backtest clean

$(STAMP): pyproject.toml tools/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' -e ./tools
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/airflow-predictive demo

test: $(STAMP)
	bash scripts/ensure-chromium.sh
	$(BIN)/ruff check airflow_predictive tools dags plugins tests
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile

# ruff, and the layer contract of pyproject.toml's [tool.importlinter] (layers import only downward).
lint: $(STAMP)
	$(BIN)/ruff check airflow_predictive tools dags plugins tests
	$(BIN)/ruff format --check airflow_predictive tools dags plugins tests
	$(BIN)/lint-imports

# Backtest every trace in TRACES (default: the repository's sample traces), all four policies, product
# defaults. The team's benchmark tables use the larger shared set: make backtest TRACES='../shared/data/traces/*.csv'
TRACES ?= examples/traces/*.csv
backtest: $(STAMP)
	$(BIN)/airflow-predictive backtest $(TRACES) --json backtest.json --report backtest.html --markdown backtest.md

clean:
	rm -rf $(VENV) .demo artifacts build *.egg-info
