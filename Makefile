# Set-up and the two README commands. `make demo` runs the whole pipeline on the embedded default;
# `make test` runs the test suite. Both set up first if needed: .venv/ with the pinned stack, and
# Spark's extra jars in .jars/ (fetched once through Maven; `make jars` does only that part).
# Python 3.12 when present, else 3.11 (the pinned stack's pyarrow 14 has wheels for both), on PATH or
# installed by pyenv. An interpreter counts only if it runs: a pyenv shim for a version that is not
# selected is on PATH but fails.
PYTHON ?= $(shell for candidate in python3.12 \
	$$(ls -d "$$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12 2>/dev/null | sort -V | tail -n 1) \
	python3.11 python3; do \
	$$candidate -c 'import sys; assert sys.version_info[:2] in ((3, 12), (3, 11)); print(sys.executable)' \
	2>/dev/null && break; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JARS := .jars/.fetched

.PHONY: setup demo test lint clean jars

setup: $(STAMP) $(JARS)

$(STAMP): setup.py constraints.txt
	@bash scripts/check-environment.sh $(PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
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
# the modules with the most tests first and leave the long end-to-end ones for last.
test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder tests

lint: $(STAMP)
	$(BIN)/ruff check recspark jobs tests

clean:
	rm -rf runs .pytest_cache

# Spark's extra jars for cluster storage (the S3A connector matching pyspark's Hadoop 3.4.1 and its
# AWS SDK bundle, Delta Lake for Spark 4.0), fetched through Maven from deps/pom.xml into .jars/.
# Downloaded into .jars/.download/ first, then moved in (a rename per jar), so a failed fetch keeps the
# old jars and a changed pom leaves no stale version behind: recspark.core.spark and
# scripts/spark-submit put every .jars/*.jar on Spark's classpath.
jars: $(JARS)

$(JARS): deps/pom.xml
	@command -v mvn >/dev/null || { echo "set-up needs Maven (mvn) to fetch Spark's jars into .jars/: install it (e.g. apt-get install maven) and re-run" >&2; exit 2; }
	rm -rf .jars/.download
	mvn -q -f deps/pom.xml dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/.jars/.download -DincludeScope=runtime
	cd .jars && for jar in *.jar; do [ -e ".download/$$jar" ] || rm -f "$$jar"; done
	mv -f .jars/.download/*.jar .jars/
	rm -rf .jars/.download
	@touch $@
