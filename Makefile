# Set-up and the two README commands. `make demo` runs the whole pipeline on the embedded default;
# `make test` runs the test suite. Both set up first if needed: a venv with the stack's pins, and
# Spark's extra jars in .jars/spark-X.Y/ (fetched once through Maven; `make jars` does only that).
#
# STACK=pinned (the default): .venv/, constraints.txt, Python 3.12 or 3.11, pyspark 4.0 with
# petastorm feeding the trainer; `make test` runs the whole suite.
# STACK=current: .venv-current/, constraints-current.txt, Python 3.13 or 3.12, pyspark 4.2 with
# pyarrow >= 18 and numpy 2, the trainer fed by recspark's arrow feed; `make test STACK=current`
# runs the tests that matter for a stack (CURRENT_TESTS).
STACK ?= pinned
# On the current stack: the five stages, nightly, object stores, Delta tables, the feed contract,
# files that could run code, and a model trained on one stack scored on the other.
# (nightly's and the untrusted files' JVM-free halves are in tests/unit/.)
CURRENT_TESTS := tests/e2e/test_pipeline.py tests/e2e/test_nightly.py tests/unit/ops/test_nightly.py \
	tests/e2e/test_object_store.py tests/e2e/test_tables.py tests/unit/train/test_feed_contract.py \
	tests/e2e/test_untrusted_files.py tests/unit/core/test_untrusted_files.py \
	tests/e2e/test_cross_stack.py
ifeq ($(STACK),pinned)
VENV := .venv
CONSTRAINTS := constraints.txt
EXTRAS := dev,petastorm
SPARK_LINE := 4.0
PYTHONS := 3.12 3.11
TESTS := tests
else ifeq ($(STACK),current)
VENV := .venv-current
CONSTRAINTS := constraints-current.txt
EXTRAS := dev
SPARK_LINE := 4.2
PYTHONS := 3.13 3.12
TESTS := $(CURRENT_TESTS)
else
$(error STACK must be pinned or current, not $(STACK))
endif
# The first of the stack's Pythons that runs, on PATH or installed by pyenv. An interpreter counts
# only if it runs: a pyenv shim for a version that is not selected is on PATH but fails.
PYTHON ?= $(shell for version in $(PYTHONS); do for candidate in python$$version \
	$$(ls -d "$$(pyenv root 2>/dev/null)"/versions/$$version*/bin/python$$version 2>/dev/null \
	| sort -V | tail -n 1); do $$candidate -c 'import sys; print(sys.executable)' 2>/dev/null \
	&& exit 0; done; done)
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
AIRFLOW_STAMP := .venv-airflow/.installed
JARS := .jars/spark-$(SPARK_LINE)/.fetched

.PHONY: setup demo test test-fast test-all lint clean jars airflow

setup: $(STAMP) $(JARS)

$(STAMP): setup.py $(CONSTRAINTS)
	@bash scripts/check-environment.sh "$(PYTHON)" $(PYTHONS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	@touch $(STAMP)

demo: setup
	$(BIN)/recspark generate
	$(BIN)/recspark prepare
	$(BIN)/recspark train
	$(BIN)/recspark score
	$(BIN)/recspark evaluate

# Two pytest-xdist workers, a module each at a time (module fixtures run once): much of the suite
# waits on JVMs, subprocesses and servers, so two halves overlap well even on two cores. Modules go
# out in the order tests/conftest.py collects them (longest first); xdist would otherwise hand out
# the modules with the most tests first and leave the long end-to-end ones for last. On the pinned
# stack it sets up Airflow's venv too (`make airflow`), so that tests/e2e/test_airflow.py runs.
test: setup $(if $(filter pinned,$(STACK)),$(AIRFLOW_STAMP))
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder $(TESTS)

# The unit lane alone: tests/unit/ needs no JVM, Spark, jars or servers (tests/unit/conftest.py
# fails a test that starts one), so it runs in well under a minute; `make test` runs it too.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 tests/unit

# Both stacks, as CI runs them: the whole suite on the pinned one, then the current one's tests.
test-all:
	$(MAKE) test STACK=pinned
	$(MAKE) test STACK=current

# Format check, ruff's rules (line length 100, ruff.toml) and mypy in basic mode on recspark/
# (mypy.ini). .ci/run runs it before the tests; like them, it sets up the venv first if needed.
lint: $(STAMP)
	$(BIN)/ruff format --check recspark jobs tests benchmarks
	$(BIN)/ruff check recspark jobs tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf runs .pytest_cache

# Airflow 3 in a venv of its own, .venv-airflow/ (apache-airflow and its Spark provider, the whole
# tree pinned in constraints-airflow.txt): tests/e2e/test_airflow.py imports, renders and runs the
# example DAGs of conf/scheduler/ with it. Not part of recspark's install; `make test` sets it up
# (93 s here from PyPI, ~640 MB), and the Airflow tests skip, naming this target,
# where it is absent.
AIRFLOW_PYTHONS := 3.12 3.11
AIRFLOW_PYTHON ?= $(shell for version in $(AIRFLOW_PYTHONS); do for candidate in python$$version \
	$$(ls -d "$$(pyenv root 2>/dev/null)"/versions/$$version*/bin/python$$version 2>/dev/null \
	| sort -V | tail -n 1); do $$candidate -c 'import sys; print(sys.executable)' 2>/dev/null \
	&& exit 0; done; done)
airflow: $(AIRFLOW_STAMP)

$(AIRFLOW_STAMP): constraints-airflow.txt
	@[ -n "$(AIRFLOW_PYTHON)" ] || { echo "make airflow needs Python $(AIRFLOW_PYTHONS) (on PATH or through pyenv)" >&2; exit 2; }
	rm -rf .venv-airflow
	$(AIRFLOW_PYTHON) -m venv .venv-airflow
	.venv-airflow/bin/pip install --quiet --upgrade pip
	.venv-airflow/bin/pip install --quiet -c constraints-airflow.txt apache-airflow apache-airflow-providers-apache-spark
	@touch $@

# Spark's extra jars for cluster storage (the S3A connector matching pyspark's Hadoop and its AWS
# SDK bundle, Delta Lake for that Spark line), fetched through Maven from deps/spark-X.Y/pom.xml into
# .jars/spark-X.Y/. Downloaded into .download/ first, then moved in (a rename per jar), so a failed
# fetch keeps the old jars and a changed pom leaves no stale version behind: recspark.core.spark and
# scripts/spark-submit put the running pyspark's .jars/spark-X.Y/*.jar on Spark's classpath.
JAR_DIR := .jars/spark-$(SPARK_LINE)
jars: $(JARS)

$(JARS): deps/spark-$(SPARK_LINE)/pom.xml
	@command -v mvn >/dev/null || { echo "set-up needs Maven (mvn) to fetch Spark's jars into .jars/: install it (e.g. apt-get install maven) and re-run" >&2; exit 2; }
	rm -rf $(JAR_DIR)/.download
	mkdir -p $(JAR_DIR)
	mvn -q -f deps/spark-$(SPARK_LINE)/pom.xml dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/$(JAR_DIR)/.download -DincludeScope=runtime
	cd $(JAR_DIR) && for jar in *.jar; do [ -e ".download/$$jar" ] || rm -f "$$jar"; done
	mv -f $(JAR_DIR)/.download/*.jar $(JAR_DIR)/
	rm -rf $(JAR_DIR)/.download
	@touch $@
