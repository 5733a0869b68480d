"""The GPU paths' logic, checked without a GPU: the provider probe runs a convolution and a missing
cuDNN is named; the NVIDIA wheels are looked for in every site-packages; the version floors and two
onnxruntime builds in one folder are one line each; with no runtime the CLI says which extra to
install; TensorRT's version is read after its wheel is loaded and its engine folder never moves;
gpu-check installs nothing and stops in one line here; every int8 file runs only where it was
made for; the TensorRT int8 file is shipped symmetric; gpu-carry's parts round-trip.

Run: .venv/bin/pytest tests/test_gpu_paths.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.helpers import REPO, tiny_classifier
from toolkit.edge.runtime import gpu, install
from toolkit.edge.runtime import open as opening
from toolkit.edge.runtime.model import ProviderError, int8_target
from toolkit.edge.runtime.tensorrt import READY, EngineCache


def script(name: str):
    """A benchmarks/ script as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return module


# ----------------------------------------------------------------------------- 1: the probe, cuDNN

def test_the_provider_probe_runs_a_convolution(tmp_path, monkeypatch):
    feeds = opening._probe_model(tmp_path / "probe.onnx")
    graph = onnx.load(str(tmp_path / "probe.onnx")).graph
    assert [n.op_type for n in graph.node] == ["Conv"]
    ran = []

    class Probe:
        def first_run(self, given):
            ran.append(given)

    monkeypatch.setattr(opening, "open_model", lambda *a, **k: Probe())
    assert opening._probe.__wrapped__("cuda") is None
    assert ran and ran[0]["x"].shape == feeds["x"].shape == (1, 1, 4, 4)


def test_a_first_run_without_cudnn_names_it_in_one_line(tmp_path, monkeypatch):
    missing = "cuDNN (libcudnn.so.9: every convolution needs it) not found in any nvidia package on sys.path"
    monkeypatch.setattr(gpu, "_preload_cuda", lambda: missing)
    model = opening.open_model(tiny_classifier(tmp_path / "tiny.onnx"), "cpu")
    model.provider = "cuda"

    def fails(feeds):
        raise RuntimeError("CUDNN failure 1: CUDNN_STATUS_NOT_INITIALIZED\nmore detail")

    model.runner = fails
    with pytest.raises(ProviderError) as caught:
        model.first_run({"image": np.zeros((1, 32, 32, 3), np.uint8)})
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and "libcudnn.so.9" in message and "first run of tiny.onnx" in message


# ----------------------------------------------------------------------------- 2: every nvidia folder

def fake_library(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x7fELF")


def test_preload_passes_the_nvidia_folders_of_every_site_packages(tmp_path, monkeypatch):
    cuda_lib = tmp_path / "venv-site" / "nvidia" / "cu13" / "lib"
    cudnn_lib = tmp_path / "system-site" / "nvidia" / "cudnn" / "lib"
    fake_library(cuda_lib / "libcublas.so.13")
    fake_library(cudnn_lib / "libcudnn.so.9")
    (tmp_path / "system-site" / "nvidia" / "empty" / "lib").mkdir(parents=True)     # no libraries: skipped
    monkeypatch.setattr(sys, "path", [*sys.path, str(tmp_path / "system-site"), str(tmp_path / "venv-site")])
    calls = []
    fake_ort = SimpleNamespace(preload_dlls=lambda directory=None, **_: calls.append(directory))
    monkeypatch.setattr(gpu, "_ort", lambda: fake_ort)
    monkeypatch.setattr(gpu, "cuda_build_version", lambda: "13.0")
    monkeypatch.setattr(gpu, "_mapped", lambda pattern: None if "cudnn" in pattern else Path("/loaded"))
    result = gpu._preload_cuda.__wrapped__()
    assert calls == [str(cuda_lib.resolve()), str(cudnn_lib.resolve()), None]     # cuDNN's folder last
    assert result.startswith("cuDNN (libcudnn.so.9: every convolution needs it) not found in ")
    assert str(cuda_lib.resolve()) in result and str(cudnn_lib.resolve()) in result


# ----------------------------------------------------------------------------- 3, 4, 8: the installed runtime

def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_floors_are_stated_and_checked():
    project = pyproject()["project"]
    assert project["requires-python"] == ">=3.11"
    assert project["optional-dependencies"]["cpu"] == ["onnxruntime>=1.24"]
    assert project["optional-dependencies"]["gpu"][0].startswith("onnxruntime-gpu[cuda,cudnn]>=1.31")
    old = install.floors("1.22.1", (3, 12))
    assert old is not None and "onnxruntime ≥ 1.24" in old and "1.22.1" in old and len(old.splitlines()) == 1
    assert "Python ≥ 3.11" in install.floors(None, (3, 10))
    assert install.floors("1.31.1", (3, 11)) is None and install.floors("1.24.0.dev20260101", (3, 12)) is None


def test_an_onnxruntime_below_the_floor_is_one_line(monkeypatch):
    monkeypatch.setattr(install, "installed_runtimes", list)
    monkeypatch.setitem(sys.modules, "onnxruntime", SimpleNamespace(__version__="1.20.0"))
    with pytest.raises(install.SetupError, match=r"needs onnxruntime ≥ 1\.24.*this is 1\.20\.0"):
        install.onnxruntime.__wrapped__()


def distributions(*entries: tuple[str, str, Path]):
    return lambda: [SimpleNamespace(metadata={"Name": name}, version=version, locate_file=lambda _, f=folder: f)
                    for name, version, folder in entries]


def test_two_runtimes_in_one_folder_say_which_to_uninstall(tmp_path, monkeypatch):
    monkeypatch.setattr(install.metadata, "distributions", distributions(
        ("numpy", "2.1.0", tmp_path), ("onnxruntime", "1.30.0", tmp_path), ("onnxruntime_gpu", "1.31.1", tmp_path)))
    found = install.installed_runtimes()
    assert [name for name, _, _ in found] == ["onnxruntime", "onnxruntime-gpu"]
    message = install.conflict(found)
    assert message is not None and len(message.splitlines()) == 1
    assert "uninstall onnxruntime " in message and "pip uninstall -y onnxruntime &&" in message
    assert "pip install --force-reinstall --no-deps onnxruntime-gpu==1.31.1" in message
    with pytest.raises(install.SetupError, match="overwrite each other"):
        install.onnxruntime.__wrapped__()


def test_runtimes_in_different_folders_are_no_conflict_but_shadowing_is_said(tmp_path, monkeypatch):
    monkeypatch.setattr(install.metadata, "distributions", distributions(
        ("onnxruntime", "1.30.0", tmp_path / "venv"), ("onnxruntime-gpu", "1.31.1", tmp_path / "system")))
    found = install.installed_runtimes()
    assert install.conflict(found) is None
    assert "hides onnxruntime-gpu 1.31.1" in install.shadowing(found)


def test_the_runtime_is_an_extra_not_a_dependency():
    project = pyproject()["project"]
    assert not [d for d in project["dependencies"] if d.startswith("onnxruntime")]
    assert "'.[cpu," in (REPO / "Makefile").read_text()


@pytest.mark.slow
def test_no_runtime_installed_is_one_clear_line(tmp_path):
    model = tiny_classifier(tmp_path / "tiny.onnx")
    code = ("import sys; sys.modules['onnxruntime'] = None; from toolkit.cli import main; "
            f"sys.argv = ['toolkit', 'infer', {str(REPO / 'models' / 'samples')!r}, '--model', {str(model)!r}]; main()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                            cwd=REPO, env={k: v for k, v in os.environ.items() if k != "TOOLKIT_DEBUG"})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "no onnxruntime is installed" in lines[0] and "toolkit[cpu]" in lines[0] and "toolkit[gpu]" in lines[0]


def test_a_gpu_provider_on_the_cpu_build_says_which_runtime_to_install(monkeypatch):
    monkeypatch.setattr(gpu, "cuda_build_version", lambda: None)
    line = gpu.failure_line("cuda", "")
    assert len(line.splitlines()) == 1 and "is a CPU build" in line
    assert "pip uninstall -y onnxruntime && pip install 'toolkit[gpu]'" in line


# ----------------------------------------------------------------------------- 7: TensorRT

def test_tensorrt_version_is_read_after_the_wheel_is_loaded(monkeypatch):
    loaded = []
    monkeypatch.setattr(gpu, "preload", lambda provider: loaded.append(provider) or "")
    monkeypatch.setattr(gpu, "_mapped", lambda pattern: Path("/wheel/libnvinfer.so.10") if loaded else None)
    monkeypatch.setattr(gpu, "infer_lib_version", lambda path: 101300)
    assert gpu.tensorrt_library() == (Path("/wheel/libnvinfer.so.10"), "10.13.0")
    assert loaded == ["tensorrt"]


def test_the_engine_folder_never_moves_and_keeps_later_engines(tmp_path):
    cache = EngineCache.prepare(tmp_path, "key", "batch4")
    session_path = cache.path
    assert session_path.is_dir() and cache.pending and not cache.hit
    (session_path / "batch4.engine").write_bytes(b"engine")
    cache.publish()
    assert cache.path == session_path and (session_path / READY).is_file()
    (session_path / "batch8.engine").write_bytes(b"a rebuild for a new shape")    # the same session, later
    again = EngineCache.prepare(tmp_path, "key", "batch4")
    assert again.hit and again.path == session_path
    assert sorted(p.name for p in session_path.iterdir()) == [READY, "batch4.engine", "batch8.engine"]
    again.discard()                                  # a published folder stays
    assert (session_path / "batch8.engine").is_file()


def test_a_failed_or_interrupted_build_leaves_nothing(tmp_path):
    failed = EngineCache.prepare(tmp_path, "key", "batch4")
    (failed.path / "half.engine").write_bytes(b"half")
    failed.discard()
    assert list(tmp_path.iterdir()) == []
    stale = tmp_path / "key" / "batch2"
    stale.mkdir(parents=True)
    (stale / "cut-short.engine").write_bytes(b"x")
    fresh = EngineCache.prepare(tmp_path, "key", "batch2")
    assert fresh.pending and list(fresh.path.iterdir()) == []


# ----------------------------------------------------------------------------- 5: gpu-check

def test_gpu_check_installs_nothing():
    dry = subprocess.run(["make", "-n", "gpu-check"], cwd=REPO, capture_output=True, text=True, check=False)
    assert dry.returncode == 0 and "benchmarks/gpu_check.py" in dry.stdout
    assert "pip" not in dry.stdout and "venv" not in dry.stdout.replace(".venv/bin/python", "")


@pytest.mark.slow
def test_gpu_check_without_a_driver_is_one_line_within_20_s():
    if gpu.cuda_driver_version() is not None:
        pytest.skip("an NVIDIA driver is here: gpu-check goes on to the real checks")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "benchmarks/gpu_check.py"], cwd=REPO, capture_output=True, text=True,
                            timeout=60, check=False)
    assert time.perf_counter() - start < 20
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        ("error: no usable GPU here: no NVIDIA driver (libcuda.so.1 does not load); make gpu-check needs a machine "
        "with an NVIDIA GPU")]


def fake_wheel(path: Path, cuda: str = "13.0", payload: bytes = b"") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("onnxruntime/__init__.py", "__version__ = '1.31.1'\n")
        archive.writestr("onnxruntime/capi/build_and_package_info.py",
                         f"package_name = 'onnxruntime-gpu'\n__version__ = '1.31.1'\ncuda_version = '{cuda}'\n")
        archive.writestr("onnxruntime/capi/libonnxruntime_providers_cuda.so", payload)
        archive.writestr("onnxruntime_gpu-1.31.1.dist-info/WHEEL", "Wheel-Version: 1.0\nTag: cp312-cp312-linux\n")
    return path


def test_gpu_check_takes_onnxruntime_gpu_from_a_wheel_or_folder_and_names_what_is_missing(tmp_path, monkeypatch):
    preflight = script("gpu_preflight")
    monkeypatch.setattr(preflight, "CARRIED", tmp_path / "site")
    monkeypatch.delenv("ORT_GPU", raising=False)
    here = "".join(map(str, sys.version_info[:2]))
    wheel = fake_wheel(tmp_path / f"onnxruntime_gpu-1.31.1-cp{here}-cp{here}-manylinux_2_28_x86_64.whl")
    folder, why = preflight.ort_gpu_source(str(wheel))
    assert why is None and folder == tmp_path / "site" and (folder / "onnxruntime" / "__init__.py").is_file()
    other = fake_wheel(tmp_path / "onnxruntime_gpu-1.31.1-cp39-cp39-manylinux_2_28_x86_64.whl")
    assert "is for Python 3.9" in preflight.ort_gpu_source(str(other))[1]
    monkeypatch.setattr(preflight, "CARRIED", tmp_path / "nothing")
    monkeypatch.setattr(gpu, "cuda_driver_version", lambda: "13.0")
    monkeypatch.setattr(install, "installed_runtimes", lambda: [("onnxruntime", "1.30.0", tmp_path)])
    monkeypatch.setattr(preflight, "model_gaps", lambda: ["models/dcgan.onnx missing: `make models` builds them"])
    saved = (list(sys.path), os.environ.get("PYTHONPATH"))
    try:
        lines = preflight.missing_pieces(None)
    finally:
        sys.path[:] = saved[0]
        os.environ.pop("PYTHONPATH", None) if saved[1] is None else os.environ.__setitem__("PYTHONPATH", saved[1])
    assert len(lines) == 2 and all(len(line.splitlines()) == 1 for line in lines)
    assert "onnxruntime-gpu is not installed" in lines[0] and "--ort-gpu PATH" in lines[0]
    assert lines[1].startswith("models/dcgan.onnx missing")


# ----------------------------------------------------------------------------- 6: int8 files per runtime

def int8_meta(target: str) -> dict:
    return {"toolkit.precision": "int8", "toolkit.calibration": json.dumps({"target": target})}


def test_each_int8_file_runs_only_where_it_was_made_for():
    made_for = script("gpu_check").made_for
    assert made_for({"toolkit.precision": "fp16"}, "tensorrt") is None
    assert made_for(int8_meta("tensorrt"), "tensorrt") is None and made_for(int8_meta("cpu"), "cuda") is None
    for target in ("cpu", "openvino"):
        reason = made_for(int8_meta(target), "tensorrt")
        assert reason is not None and f"quantized for {target}" in reason
    assert "quantized for openvino" in made_for(int8_meta("openvino"), "cuda")


TRT_INT8 = REPO / "models" / "cifar_cnn.trt.int8.onnx"


def test_the_shipped_tensorrt_int8_file_is_symmetric_with_zero_points_0():
    model = onnx.load(str(TRT_INT8))
    meta = {p.key: p.value for p in model.metadata_props}
    assert int8_target(meta) == "tensorrt" and meta["toolkit.task"] == "classify"
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    quantizers = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    zero_points = [inits[n.input[2]] for n in quantizers if len(n.input) > 2 and n.input[2] in inits]
    assert quantizers and len(zero_points) == len(quantizers)
    assert all(zp.dtype == np.int8 and not zp.any() for zp in zero_points)
    from toolkit.edge.contract import check_model_file

    check_model_file(TRT_INT8)
    assert "cifar_cnn.trt.int8.onnx" in (REPO / "models" / "README.md").read_text()


# ----------------------------------------------------------------------------- gpu-carry

def test_gpu_carry_parts_stay_under_the_limit_and_round_trip(tmp_path):
    carry = script("gpu_carry")
    payload = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()   # incompressible
    wheel = fake_wheel(tmp_path / "onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl", payload=payload)
    model = tmp_path / "models" / "cifar_cnn.onnx"
    model.parent.mkdir()
    model.write_bytes(b"onnx bytes")
    limit = 100_000
    manifest = carry.pack(wheel, [model], tmp_path / "carry", limit, preset=1)
    sizes = [part["bytes"] for part in manifest["parts"]]
    assert len(sizes) >= 3 and max(sizes) <= limit and manifest["cuda"] == "13.0"
    target = tmp_path / "target"
    written = carry.unpack(tmp_path / "carry", target)
    assert (target / ".gpu/site/onnxruntime/capi/libonnxruntime_providers_cuda.so").read_bytes() == payload
    assert (target / "models/cifar_cnn.onnx").read_bytes() == b"onnx bytes" and len(written) == 5
    steps = carry.plan(manifest, tmp_path / "carry", 30 * carry.MB, 64 * carry.MB)
    assert any("the working tree" in line for line in steps) and steps[-1].endswith("make gpu-check PYTHON=python3")
    first = tmp_path / "carry" / manifest["parts"][0]["name"]
    first.write_bytes(first.read_bytes()[:-1] + b"\0")
    with pytest.raises(carry.CarryError, match="damaged"):
        carry.unpack(tmp_path / "carry", target)
