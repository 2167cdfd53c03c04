# Set-up and the two README commands. `make demo` runs the whole pipeline on the embedded default;
# `make test` runs the test suite. Both create .venv/ with the pinned stack first if needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint clean jars

setup: $(STAMP)

$(STAMP): setup.py constraints.txt
	@bash scripts/check-environment.sh $(PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/recspark generate
	$(BIN)/recspark prepare
	$(BIN)/recspark train
	$(BIN)/recspark score
	$(BIN)/recspark evaluate

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check recspark jobs tests

clean:
	rm -rf runs .pytest_cache

# Spark's extra jars for cluster storage (the S3A connector matching pyspark's Hadoop 3.4.1 and its
# AWS SDK bundle, Delta Lake for Spark 4.0), fetched through Maven from deps/pom.xml into .jars/.
jars: .jars/.fetched

.jars/.fetched: deps/pom.xml
	@command -v mvn >/dev/null || { echo "make jars needs Maven (mvn): apt-get install maven" >&2; exit 2; }
	mvn -q -f deps/pom.xml dependency:copy-dependencies -DoutputDirectory=../.jars -DincludeScope=runtime
	@touch $@
