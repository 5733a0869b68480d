# The two set-up commands are `make demo` and `make test`; both install first when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATASETS ?= ../shared/datasets

.PHONY: install data demo test bench clean

install: $(STAMP)

# torch is pinned here, not in pyproject: on the dev machine torch==2.13.0 is a local CPU wheel,
# while an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

data: data/cifar10-jpeg/train data/anime-faces-64/faces

data/cifar10-jpeg/train:
	mkdir -p data && tar -xzf $(DATASETS)/cifar10-jpeg-train.tar.gz -C data

data/anime-faces-64/faces:
	mkdir -p data && tar -xzf $(DATASETS)/anime-faces-64.tar.gz -C data

demo: install
	@echo "== classify the sample images (top-3) with the shipped int8-ready CNN"
	$(BIN)/toolkit infer models/samples --top-k 3

test: install
	$(BIN)/pytest

# The full matrix on this machine → benchmarks/results/<machine>.{json,md,png}; run it on a quiet machine.
bench: install
	$(BIN)/python benchmarks/run_bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
