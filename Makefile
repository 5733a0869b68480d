# The two set-up commands are `make demo` and `make test`; both install first when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATASETS ?= ../shared/datasets

.PHONY: install data demo test bench robustness clean

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
	@echo "== classify the sample images (top-3) with the shipped CIFAR-10 CNN"
	$(BIN)/toolkit infer models/samples --top-k 3
	@echo "== the same with the int8 model"
	$(BIN)/toolkit infer models/samples --top-k 1 --model models/cifar_cnn.int8.onnx
	@echo "== generate 64 anime faces with the shipped DCGAN → demo/faces.png"
	$(BIN)/toolkit generate --n 64 --seed 0 --out demo/faces.png
	@echo "== low-pass and Walsh-compress a sample image → demo/"
	$(BIN)/toolkit transform models/samples/horse.jpg --op fft-lowpass --radius 0.3 --out demo/horse_lowpass.png --compare
	$(BIN)/toolkit transform models/samples/horse.jpg --op walsh-compress --keep 0.5 --out demo/horse_walsh.png --compare
	@echo "== a short benchmark of every shipped model (make bench for the full matrix)"
	$(BIN)/toolkit bench --torch --seconds 0.5

test: install
	$(BIN)/pytest

# The full matrix on this machine → benchmarks/results/<machine>.{json,md,png}; run it on a quiet machine.
bench: install
	$(BIN)/python benchmarks/run_bench.py

# Classifier accuracy under noise and JPEG, with and without the low-pass → benchmarks/results/robustness.*
robustness: install data
	$(BIN)/python benchmarks/robustness.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo
