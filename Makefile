# The two set-up commands are `make demo` and `make test`; both install first when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATASETS ?= ../shared/datasets

.PHONY: install models clean-models wheel data demo lint test test-fast bench gpu-check gpu-carry robustness clean

install: $(STAMP)

# Everything: the runtime package with the CPU runtime (`cpu` extra: onnxruntime), the `train`, `ray`,
# `dev` and `openvino` extras. torch and onnxruntime are pinned here, not in pyproject: on the dev
# machine torch==2.13.0 is a local CPU wheel, while an unpinned torch would pull a multi-GB CUDA
# build, and onnxruntime 1.31.1 is the build every committed number was measured with; naming the
# pins again with the extras keeps pip from picking others. onnxruntime-gpu left in the venv would
# share the `onnxruntime` folder with the cpu extra's onnxruntime (each overwrites the other's
# files), so it goes first and onnxruntime is reinstalled whole.
ORT_PIN := onnxruntime==1.31.1
$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	if $(BIN)/pip show --quiet onnxruntime-gpu 2>/dev/null; then \
		$(BIN)/pip uninstall --quiet -y onnxruntime-gpu && $(BIN)/pip install --quiet --force-reinstall --no-deps '$(ORT_PIN)'; fi
	$(BIN)/pip install --quiet torch==2.13.0 '$(ORT_PIN)' -e '.[cpu,train,dev,openvino,ray]'
	$(BIN)/python -m toolkit.edge.bench --build-only    # the roof probe (C, system compiler; says so if none)
	touch $@

# Every shipped ONNX file except the int8 classifiers (their calibration needs the data set) is
# built here from the tracked weights: deterministic, parity-gated, about a minute, no data needed
# (gates use seeded random images when data/ is absent). A file is rebuilt when its weights or the
# package version change; `make -B models` rebuilds all. ZOO_STEMS: zoo models with tracked weights
# (models/<stem>.safetensors → <stem>.onnx and <stem>.fp16.onnx; the model is the stem with - for _).
ZOO_STEMS   := cifar_cnn cifar_resnet dcgan
MODEL_FILES := $(foreach s,$(ZOO_STEMS),models/$(s).onnx models/$(s).fp16.onnx) models/dcgan.int8.onnx \
               models/cifar_cnn.fft_lowpass.onnx models/fft_lowpass.onnx models/walsh_compress.onnx \
               models/cifar_cnn.tta.onnx models/cifar_resnet.tta.onnx
EXPORT      := $(BIN)/toolkit export
MODEL_DEPS  := toolkit/_version.py | $(STAMP)

models: $(MODEL_FILES)

models/%.fp16.onnx: models/%.safetensors $(MODEL_DEPS)
	$(EXPORT) --model $(subst _,-,$*) --precision fp16 --out $@

models/%.onnx: models/%.safetensors $(MODEL_DEPS)
	$(EXPORT) --model $(subst _,-,$*) --out $@

# Test-time flip averaging: the mirror and the mean are nodes of the graph (same uint8 input).
models/%.tta.onnx: models/%.safetensors $(MODEL_DEPS)
	$(EXPORT) --model $(subst _,-,$*) --tta --out $@

models/dcgan.int8.onnx: models/dcgan.safetensors $(MODEL_DEPS)
	$(EXPORT) --model dcgan --precision int8 --out $@

models/cifar_cnn.fft_lowpass.onnx: models/cifar_cnn_lowpass.safetensors $(MODEL_DEPS)
	$(EXPORT) --model cifar-cnn --weights $< --preprocess fft-lowpass:0.5 --out $@

models/fft_lowpass.onnx: $(MODEL_DEPS)
	$(EXPORT) --model fft-lowpass --radius 0.5 --size 32 32 --form matmul --out $@

models/walsh_compress.onnx: $(MODEL_DEPS)
	$(EXPORT) --model walsh-compress --keep 0.5 --size 32 32 --form matmul --out $@

clean-models:
	rm -f $(MODEL_FILES)

# A wheel of the runtime package with the shipped models inside (pip install dist/toolkit-*.whl).
wheel: models
	$(BIN)/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir dist .

# The archives' folder (read-only): DATASETS=/path/to/archives overrides it. What each holds and the
# fixed validation split: docs/data.md.
data: data/cifar10-png/train data/cifar10-jpeg/train data/anime-faces-64/faces

data/cifar10-png/train:
	mkdir -p data && tar -xzf $(DATASETS)/cifar10-png-train.tar.gz -C data

data/cifar10-jpeg/train:
	mkdir -p data && tar -xzf $(DATASETS)/cifar10-jpeg-train.tar.gz -C data

data/anime-faces-64/faces:
	mkdir -p data && tar -xzf $(DATASETS)/anime-faces-64.tar.gz -C data

demo: install models
	@echo "== classify the sample images (top-3) with the strongest shipped classifier (residual net, flip averaging)"
	$(BIN)/toolkit infer models/samples --top-k 3
	@echo "== the residual net in int8, and the reference paper's CNN"
	$(BIN)/toolkit infer models/samples --top-k 1 --model models/cifar_resnet.int8.onnx
	$(BIN)/toolkit infer models/samples --top-k 1 --model models/cifar_cnn.onnx
	@echo "== generate 64 anime faces with the shipped DCGAN → demo/faces.png"
	$(BIN)/toolkit generate --n 64 --seed 0 --out demo/faces.png
	@echo "== low-pass and Walsh-compress a sample image → demo/"
	$(BIN)/toolkit transform models/samples/horse.jpg --op fft-lowpass --radius 0.3 --out demo/horse_lowpass.png --compare
	$(BIN)/toolkit transform models/samples/horse.jpg --op walsh-compress --keep 0.5 --out demo/horse_walsh.png --compare
	@echo "== a short benchmark of every shipped model (make bench for the full matrix)"
	$(BIN)/toolkit bench --torch --seconds 0.5

# The static gates (ruff's rule set and its reasons, mypy's settings: pyproject.toml); .ci/run runs
# them before the tests.
lint: install
	$(BIN)/ruff check toolkit tests benchmarks
	$(BIN)/mypy toolkit

test: install models
	$(BIN)/pytest

# The inner loop (under a minute on 2 cores): everything but the tests marked slow, gpu or data
# (the markers and what each means: pyproject.toml [tool.pytest.ini_options]).
test-fast: install models
	$(BIN)/pytest -m "not slow and not gpu and not data"

# The full matrix on this machine, interleaved, with its measured roof → benchmarks/results/<machine>.{json,md,png}
# (per-run timings in <machine>.timings.json, not committed); run it on a quiet machine.
bench: install models
	$(BIN)/python benchmarks/run_bench.py

# On a GPU machine, one command that installs nothing (under 5 minutes): versions, CUDA and TensorRT library
# discovery, the GPU tests with TOOLKIT_REQUIRE_GPU=1, CUDA and TensorRT against the CPU on real images for every
# shipped model file, bench at batch 1 and 256 → benchmarks/results/<machine>.{json,md,png,parity.md}. It runs
# with the Python that is there: .venv/bin/python if this checkout has one, else $(PYTHON) (a Python with torch
# and the CUDA wheels has all it needs but onnxruntime-gpu, which it takes from ORT_GPU, a wheel or an unpacked
# folder, .gpu/site by default: see make gpu-carry and docs/gpu.md). Every missing piece is one line; without an
# NVIDIA driver it stops at its first line.
GPU_PYTHON = $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
ORT_GPU ?=

gpu-check:
	@$(GPU_PYTHON) benchmarks/gpu_check.py $(if $(ORT_GPU),--ort-gpu $(ORT_GPU))

# For an offline GPU machine: downloads the onnxruntime-gpu wheel for the target's Python and CUDA major
# (TARGET_PYTHON, TARGET_CUDA), recompresses it into parts of at most 60 MB in .gpu/ (git-ignored) and prints
# what to carry in which transfer and what to run there (docs/gpu.md).
TARGET_PYTHON ?= 3.12
TARGET_CUDA   ?= 13

gpu-carry:
	@$(GPU_PYTHON) benchmarks/gpu_carry.py pack --python $(TARGET_PYTHON) --cuda $(TARGET_CUDA) --out .gpu

# Classifier accuracy under noise and JPEG, with and without the low-pass → benchmarks/results/robustness.*
robustness: install data models
	$(BIN)/python benchmarks/robustness.py --classifier "fine-tuned, low-pass 0.5 fused=models/cifar_cnn.fft_lowpass.onnx"

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache demo
