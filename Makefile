PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
ifeq ($(ENGINE),spark)  # every step downstream of ingest on local Spark: a smaller default
CUSTOMERS ?= 5000
DAYS ?= 7
endif
CUSTOMERS ?= 1000000
DAYS ?= 30
ENGINE ?= duckdb

.PHONY: run test test-fast lint dev app bench clean

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,spark]'
	touch $(INSTALLED)

# RULES=<file>: another rules file, into its own warehouse (data/<file name>.duckdb); TO=<day>: the last day
run: $(INSTALLED)
	mkdir -p .dagster_home
	DAGSTER_HOME=$(CURDIR)/.dagster_home \
	$(if $(RULES),LOYALTY_CONFIG=$(RULES) LOYALTY_WAREHOUSE=data/$(notdir $(basename $(RULES))).duckdb) \
	$(BIN)/loyalty-pipeline materialize $(if $(TO),--to $(TO))

test: lint
	$(BIN)/pytest -q -n auto --dist worksteal --durations=20

test-fast: $(INSTALLED)
	$(BIN)/pytest -q -n auto --dist worksteal -m "not e2e"

lint: $(INSTALLED)
	$(BIN)/ruff check loyalty_pipeline loyalty_pipeline_tests bench
	$(BIN)/ruff format --check loyalty_pipeline loyalty_pipeline_tests bench

# Dagster's own preview warning for a Spark scaffolder it ships (not used here) is silenced, so a newcomer's first
# screen shows only what concerns this project.
dev: $(INSTALLED)
	mkdir -p .dagster_home
	PYTHONWARNINGS='ignore:Class `SparkDeclarativePipelineScaffolder`' \
	DAGSTER_HOME=$(CURDIR)/.dagster_home $(BIN)/dg dev --host 127.0.0.1

app: $(INSTALLED)
	$(BIN)/loyalty-pipeline serve

bench: $(INSTALLED)
ifeq ($(ENGINE),spark)
	$(BIN)/python bench/engines.py --customers $(CUSTOMERS) --days $(DAYS)
else
	$(BIN)/python bench/run_bench.py --customers $(CUSTOMERS) --days $(DAYS)
	$(BIN)/python bench/journey_day_cost.py --out bench/results/journey_day_cost.json
	$(BIN)/python bench/connect_cost.py --customers $(CUSTOMERS) --days $(DAYS) --out bench/results/connect_cost.json
	$(BIN)/python bench/ledger_day_cost.py --out bench/results/ledger_day_cost.json  # last: its busy person may time out
endif

clean:
	rm -rf $(VENV) data/warehouse.duckdb*
