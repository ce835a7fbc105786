# make run   - install into .venv if needed, then run the whole DAG on config/config.yaml
# make test  - install if needed, then run the test suite
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.meddap-installed
CORES ?= all
SNAKEMAKE_ARGS ?=
PYTEST_ARGS ?= --durations=30
# pytest-xdist workers: the SLURM test mostly waits on its scheduler, the other worker runs the
# rest beside it. Whole files go to a worker (one SLURM cluster per file), in the order of
# tests/conftest.py (files of the longest tests first). TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2

.PHONY: run test test-slurm install lint config-table dag clean help check-results regenerate-shard record-outputs

help:
	@echo "make run    run the whole workflow (snakemake --cores all) on config/config.yaml"
	@echo "make test   run the tests"
	@echo "make test-slurm  the SLURM test (a one-node cluster it starts; root; slow)"
	@echo "make lint   snakemake --lint, snakefmt --check, ruff check, ruff format --check and lint-imports"
	@echo "make config-table  rewrite config/README.md's config-key table from workflow/schemas/config.schema.yaml"
	@echo "make dag    redraw docs/rulegraph.svg"
	@echo "make check-results       check the default run's quality floors"
	@echo "make regenerate-shard SHARD=results/synthetic/<arm>/<class>/<adjective>/shard<NNN> (or results/guided/...)"
	@echo "make record-outputs      re-record tests/data/tiny_outputs.json after an intended change of outputs"

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) $(SNAKEMAKE_ARGS)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# The SLURM path on a one-node SLURM cluster the test starts (root; installs slurm-wlm and munge).
test-slurm: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m slurm tests/test_slurm.py $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow
	$(BIN)/ruff check src workflow/scripts tests
	$(BIN)/ruff format --check src workflow/scripts tests
	$(BIN)/lint-imports --no-cache

# config/README.md's config-key table is generated from the schema (tests/test_schema_docs.py checks it).
config-table: $(STAMP)
	$(BIN)/python -m meddap.config.schema_docs --schema workflow/schemas/config.schema.yaml --markdown config/README.md

check-results: $(STAMP)
	$(BIN)/python -m meddap.evidence.check

# Regenerate one shard, e.g. make regenerate-shard SHARD=results/synthetic/fold0/benign/bright/shard000
# (a guided shard: SHARD=results/guided/fold0/benign/bright/shard000);
# a later `make run` reruns only what depends on it.
regenerate-shard: $(STAMP)
	@test -n "$(SHARD)" || { echo "usage: make regenerate-shard SHARD=results/synthetic/<arm>/<class>/<adjective>/shard<NNN>"; exit 2; }
	$(BIN)/snakemake --cores $(CORES) --forcerun $(SHARD) --until $(SHARD)

dag: $(STAMP)
	$(BIN)/snakemake --rulegraph | dot -Tsvg > docs/rulegraph.svg

# The tiny run's outputs that refactorings must keep byte-identical (tests/outputs_digest.py).
record-outputs: $(STAMP)
	rm -rf .tiny-record && mkdir .tiny-record
	$(BIN)/snakemake --snakefile Snakefile --directory .tiny-record --cores all \
		--configfile config/config.yaml tests/configs/tiny.yaml
	$(BIN)/python tests/outputs_digest.py .tiny-record tests/data/tiny_outputs.json
	rm -rf .tiny-record

clean:
	rm -rf results/* resources/phantom .snakemake
