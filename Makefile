# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv from PATH, else the module that `make install` puts into python3.
UV = $(shell command -v uv 2>/dev/null || echo python3 -m uv)
BIN := .venv/bin
export DAGSTER_HOME ?= $(CURDIR)/dagster_home
PORT ?= 3000
# The Spark engine's extra (pyspark, ~450 MB, and Java 17+); `make run EXTRAS=` skips it.
EXTRAS ?= --extra spark

.PHONY: help install java run test dev bench lint clean

help:
	@echo "make run    install, then materialize the whole pipeline on the default input"
	@echo "make test   install, then the whole test suite"
	@echo "make dev    Dagster UI and daemon on http://127.0.0.1:$(PORT)"
	@echo "make bench  benchmarks, written to BENCHMARKS.md"

install:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
		|| python3 -m pip install --quiet --disable-pip-version-check uv \
		|| python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages uv
	@$(UV) sync --locked --quiet --compile-bytecode $(EXTRAS)
	@$(BIN)/python -m compileall -q segmentation_pipeline benchmarks

# The Spark engine's tests need a JVM; the local engine never does.
java:
	@command -v java >/dev/null 2>&1 || { \
		echo "installing Java 17 for the Spark engine's tests (openjdk-17-jre-headless)"; \
		apt-get install -y --no-install-recommends openjdk-17-jre-headless >/dev/null; } \
		|| { echo "the Spark engine needs Java 17 or newer on PATH"; exit 1; }

run: install
	$(BIN)/segmentation run

test: install java
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

# A new DAGSTER_HOME gets the project's dagster.yaml (the run queue) before the UI starts.
dev: install
	@mkdir -p "$(DAGSTER_HOME)"
	@test -f "$(DAGSTER_HOME)/dagster.yaml" || cp dagster_home/dagster.yaml "$(DAGSTER_HOME)/"
	$(BIN)/dg dev -w workspace.yaml --host 127.0.0.1 --port $(PORT)

bench: install
	$(BIN)/python -m benchmarks.run

lint: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf data/warehouse*.duckdb data/.warehouse.duckdb.* data/reports
