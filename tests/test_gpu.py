"""GPU providers: what must hold everywhere (error lines, placement, TensorRT options and caches)
and what only a GPU can show (sessions, parity with the CPU, engines, bench rows).

GPU tests skip where CUDA or TensorRT cannot run; with TOOLKIT_REQUIRE_GPU=1 (what `make gpu-check`
sets) such a skip is a failure, so a GPU box that silently lost its libraries cannot pass.
Run: .venv/bin/pytest tests/test_gpu.py     (on a GPU machine: TOOLKIT_REQUIRE_GPU=1 …)
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from typer.testing import CliRunner

from tests.helpers import REPO, tiny_classifier
from toolkit.cli import app
from toolkit.edge.runtime import ProviderError, check_provider, gpu, int8_target, open_model
from toolkit.edge.runtime.ort import classify, provider_options
from toolkit.edge.runtime.tensorrt import READY, EngineCache, gpu_name, model_hash, tensorrt_version, trt_profile

REQUIRE_GPU = os.environ.get("TOOLKIT_REQUIRE_GPU") == "1"
GPU = ["cuda", "tensorrt"]


def need(provider: str) -> None:
    """Skip unless `provider` runs here; under TOOLKIT_REQUIRE_GPU=1 fail instead, with the cause."""
    try:
        check_provider(provider)
    except ProviderError as exc:
        if REQUIRE_GPU:
            pytest.fail(f"TOOLKIT_REQUIRE_GPU=1 but {provider} cannot run here: {exc}")
        pytest.skip(f"{provider} cannot run here")


@pytest.fixture
def model_path(tmp_path) -> Path:
    return tiny_classifier(tmp_path / "tiny.onnx")


def images(n: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def toolkit(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolkit", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})}, cwd=REPO, check=False)


# ----------------------------------------------------------------------------- everywhere, no GPU needed

@pytest.mark.slow
def test_require_gpu_turns_skips_into_failures():
    try:
        check_provider("cuda")
        pytest.skip("CUDA runs here: the GPU tests pass instead of skipping")
    except ProviderError:
        pass
    command = [sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-p", "no:cacheprovider",
               f"{__file__}::test_gpu_session_matches_cpu"]
    plain = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
                           env={k: v for k, v in os.environ.items() if k != "TOOLKIT_REQUIRE_GPU"})
    assert plain.returncode == 0 and "2 skipped" in plain.stdout, plain.stdout[-2000:]
    required = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
                              env={**os.environ, "TOOLKIT_REQUIRE_GPU": "1"})
    assert required.returncode == 1 and "2 failed" in required.stdout, required.stdout[-2000:]
    assert "TOOLKIT_REQUIRE_GPU=1 but cuda cannot run here: provider 'cuda' cannot run here" in required.stdout


def shadow_onnxruntime(folder: Path) -> Path:
    """A copy of the installed onnxruntime package (symlinks) whose CUDA provider library is
    missing: onnxruntime looks for it beside its own native module and finds nothing there."""
    installed = Path(ort.__file__).parent
    package = folder / "onnxruntime"
    (package / "capi").mkdir(parents=True)
    for item in installed.iterdir():
        if item.name != "capi":
            (package / item.name).symlink_to(item.resolve())
    for item in (installed / "capi").iterdir():
        if item.name != "libonnxruntime_providers_cuda.so":
            (package / "capi" / item.name).symlink_to(item.resolve())
    return folder


@pytest.mark.slow
def test_a_provider_library_that_cannot_load_is_named_in_one_line(tmp_path, model_path):
    if gpu.cuda_build_version() is None:
        pytest.skip("a CPU build of onnxruntime has no CUDA provider library to hide")
    shadow = shadow_onnxruntime(tmp_path / "shadow")
    picture = tmp_path / "cat.png"
    Image.fromarray(images(1)[0]).save(picture)
    env = {"PYTHONPATH": os.pathsep.join([str(shadow), os.environ.get("PYTHONPATH", "")])}
    for args in (["infer", str(picture), "--model", str(model_path), "--provider", "cuda", "--json"],
                 ["bench", "--model", str(model_path), "--provider", "cuda", "--runs", "1", "--no-roof"]):
        result = toolkit(*args, env=env)
        assert result.returncode == 1 and result.stdout == "", (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (args, result.stderr)
        assert lines[0].startswith("error: provider 'cuda' cannot run here: libonnxruntime_providers_cuda.so could "
                                   "not be loaded (")
        assert str(shadow) in lines[0] and "cannot open shared object file" in lines[0]
        assert f"built for CUDA {gpu.cuda_build_version()}" in lines[0] and "NVIDIA driver: " in lines[0]


def test_placement_on_a_cpu_session(model_path):
    model = open_model(model_path, "cpu")
    where = model.placement()
    assert where.complete and where.compute == {"CPU": ["Conv conv", "MatMul fc"]} and where.subgraphs == {}
    assert where.nodes["CPU"] >= 2 and set(where.nodes) == {"CPU"}
    facts = where.facts()
    assert facts["placement_ok"] is True and facts["compute_elsewhere"] == [] and facts["compute_nodes"] == {"CPU": 2}
    # The same assignment judged against another requested provider: every compute node is elsewhere.
    assignment = [(sg.ep_name, [(n.op_type, n.name) for n in sg.get_nodes()])
                  for sg in model.session.get_provider_graph_assignment_info()]
    on_cuda = classify(assignment, "cuda")
    assert not on_cuda.complete and on_cuda.elsewhere == ["Conv conv on CPU", "MatMul fc on CPU"]


def test_tensorrt_subgraphs_count_the_nodes_inside_them():
    engine = [("Cast", "cast"), ("Transpose", "nchw"), ("Conv", "conv"), ("Relu", "relu"), ("MatMul", "fc")]
    split = classify([("TensorrtExecutionProvider", engine), ("CUDAExecutionProvider", [("Gemm", "head")]),
                      ("CPUExecutionProvider", [("Shape", "shape")])], "tensorrt")
    assert split.nodes == {"Tensorrt": 5, "CUDA": 1, "CPU": 1} and split.subgraphs == {"Tensorrt": 1}
    assert not split.complete and split.elsewhere == ["Gemm head on CUDA"]
    whole = classify([("TensorrtExecutionProvider", [*engine, ("Gemm", "head")]),
                      ("CPUExecutionProvider", [("Shape", "shape")])], "tensorrt")
    assert whole.complete and whole.compute == {"Tensorrt": ["Conv conv", "MatMul fc", "Gemm head"]}
    nothing = classify([("TensorrtExecutionProvider", []), ("CPUExecutionProvider", [("Relu", "r")])], "tensorrt")
    assert not nothing.complete            # registered, but took no node


def test_tensorrt_options_explicit_profile_keyed_cache_and_no_int8_switch_for_float(model_path, tmp_path):
    profile = trt_profile(onnx.load(model_path), {"image": (4, 32, 32, 3)})
    assert profile == "image:4x32x32x3"
    with pytest.raises(ValueError, match="no shape given"):
        trt_profile(onnx.load(model_path), {})
    root = tmp_path / "trt"
    providers, cache = provider_options("tensorrt", model_path, trt_fp16=True, cache_dir=root, profile=profile)
    name, options = providers[0]
    assert name == "TensorrtExecutionProvider" and [p if isinstance(p, str) else p[0] for p in providers[1:]] == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert options["trt_profile_min_shapes"] == options["trt_profile_opt_shapes"] == options["trt_profile_max_shapes"] \
        == profile
    assert "trt_int8_enable" not in options and options["trt_fp16_enable"] is True
    assert options["trt_engine_cache_path"] == options["trt_timing_cache_path"] == str(cache.folder)
    slug = re.sub(r"[^a-z0-9]+", "-", (gpu_name() or "unknown-gpu").lower()).strip("-")
    key = f"{model_hash(model_path)}-{slug}-trt{tensorrt_version() or 'unknown'}-ort{ort.__version__}"
    assert cache.folder.parent == root / key and cache.pending and not (cache.folder / READY).exists()
    cache.discard()
    assert list(root.iterdir()) == []


@pytest.mark.parametrize(("major", "expected"), [(10, True), (11, False)])
def test_tensorrt_int8_builder_flag_only_for_qdq_files_on_tensorrt_10(model_path, tmp_path, monkeypatch, major,
                                                                      expected):
    # TensorRT 10 refuses a Q/DQ graph unless the builder's INT8 flag is set; TensorRT 11 has no such flag.
    monkeypatch.setattr("toolkit.edge.runtime.ort._tensorrt_major", lambda: major)
    providers, cache = provider_options("tensorrt", model_path, cache_dir=tmp_path / "trt", trt_qdq_int8=True)
    options = providers[0][1]
    assert options.get("trt_int8_enable", False) is expected
    if expected:
        assert options["trt_int8_use_native_calibration_table"] is False   # scales come from the file's Q/DQ
    plain, plain_cache = provider_options("tensorrt", model_path, cache_dir=tmp_path / "trt2")
    assert "trt_int8_enable" not in plain[0][1]
    for c in (cache, plain_cache):
        if c is not None:
            c.discard()


def test_engine_cache_counts_only_after_success(tmp_path):
    failed = EngineCache.prepare(tmp_path, "key", "batch4")
    assert failed.pending and not failed.hit and not (failed.folder / READY).exists()
    failed.discard()
    assert list(tmp_path.iterdir()) == []
    built = EngineCache.prepare(tmp_path, "key", "batch4")
    (built.path / "model.engine").write_bytes(b"engine")
    built.publish()
    assert (tmp_path / "key" / "batch4" / "model.engine").is_file() and not built.pending
    assert [p.name for p in tmp_path.iterdir()] == ["key"]
    again = EngineCache.prepare(tmp_path, "key", "batch4")
    assert again.hit and again.path == tmp_path / "key" / "batch4"


def test_int8_target_reads_the_calibration_metadata():
    assert int8_target({"toolkit.precision": "fp32"}) is None
    assert int8_target({"toolkit.precision": "int8"}) == "cpu"
    assert int8_target({"toolkit.precision": "int8", "toolkit.calibration": '{"target":"tensorrt"}'}) == "tensorrt"


def test_preload_prints_nothing(capfd):
    failures = gpu.preload("cuda")
    assert isinstance(failures, str) and gpu.preload("cpu") == ""
    out, _ = capfd.readouterr()
    assert out == ""                     # preload_dlls' own print()s would corrupt --json output


# ----------------------------------------------------------------------------- on a GPU

@pytest.mark.gpu
@pytest.mark.parametrize("provider", GPU)
def test_gpu_session_matches_cpu(model_path, tmp_path, provider):
    need(provider)
    batch = images(4)
    model = open_model(model_path, provider, cache_dir=tmp_path,
                       shapes={"image": batch.shape} if provider == "tensorrt" else None)
    model.first_run({"image": batch})
    expected = open_model(model_path, "cpu").run(batch)
    np.testing.assert_allclose(model.run(batch), expected, rtol=1e-2, atol=1e-3)
    where = model.placement()
    short = {"cuda": "CUDA", "tensorrt": "Tensorrt"}[provider]
    assert where.complete and set(where.compute) == {short}, where.facts()
    if provider == "tensorrt":
        assert where.subgraphs.get("Tensorrt", 0) >= 1 and where.nodes["Tensorrt"] >= 2


@pytest.mark.gpu
@pytest.mark.parametrize("provider", GPU)
@pytest.mark.parametrize("include_copy", [False, True])
def test_gpu_bench_rows(model_path, tmp_path, provider, include_copy):
    need(provider)
    args = ["--include-copy"] if include_copy else []
    result = CliRunner().invoke(app, ["bench", "--model", str(model_path), "--provider", provider,
                                      "--batch-size", "1", "--batch-size", "8", "--runs", "3", "--warmup", "0",
                                      "--no-roof", "--json", *args])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["machine"]["gpus"] and [r["batch_size"] for r in doc["rows"]] == [1, 8]
    for row in doc["rows"]:
        assert row["provider"] == provider and row["io_binding"] is (not include_copy) and row["placement_ok"]
        assert row["first_run_s"] > 0
        if provider == "tensorrt":     # an engine per batch size, its build timed apart, one warm-up enforced
            assert row["engine_build_s"] >= row["first_run_s"] and row["engine_cache"] in ("hit", "miss")
            assert row["warmup_runs"] == 1 and row["shapes"]["image"][0] == row["batch_size"]


@pytest.mark.gpu
def test_tensorrt_cache_is_published_keyed_and_reused(model_path, tmp_path):
    need("tensorrt")
    batch = images(2)
    model = open_model(model_path, "tensorrt", cache_dir=tmp_path, shapes={"image": batch.shape})
    cache = model.engine_cache
    assert cache is not None and not cache.hit and not (cache.folder / READY).exists()
    model.first_run({"image": batch})
    assert (cache.folder / READY).is_file() and len(list(cache.folder.iterdir())) > 1
    assert cache.folder.parent.name == (f"{model_hash(model_path)}-"
                                        f"{re.sub(r'[^a-z0-9]+', '-', gpu_name().lower()).strip('-')}-"
                                        f"trt{tensorrt_version()}-ort{ort.__version__}")
    assert [p.name for p in tmp_path.iterdir()] == [cache.folder.parent.name]
    again = open_model(model_path, "tensorrt", cache_dir=tmp_path, shapes={"image": batch.shape})
    assert again.engine_cache is not None and again.engine_cache.hit


@pytest.mark.gpu
def test_tensorrt_version_is_the_loaded_library(model_path, tmp_path):
    need("tensorrt")
    open_model(model_path, "tensorrt", cache_dir=tmp_path, shapes={"image": (1, 32, 32, 3)})
    loaded = gpu.tensorrt_library()
    assert loaded is not None and str(loaded[0]) in Path("/proc/self/maps").read_text()
    major = gpu.linked_soname("libonnxruntime_providers_tensorrt.so", "libnvinfer").rsplit(".", 1)[-1]
    assert re.fullmatch(r"\d+\.\d+\.\d+", loaded[1]) and loaded[1].split(".")[0] == major


@pytest.mark.gpu
def test_tensorrt_first_run_failure_is_one_line(model_path, tmp_path):
    need("tensorrt")
    model = open_model(model_path, "tensorrt", cache_dir=tmp_path, shapes={"image": (2, 32, 32, 3)})
    with pytest.raises(ProviderError) as caught:
        model.first_run({"image": images(8)})           # outside the engine's profile
    assert len(str(caught.value).splitlines()) == 1 and "first run" in str(caught.value)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]     # nothing published


@pytest.mark.gpu
def test_cuda_from_a_torch_free_process(model_path):
    need("cuda")
    code = ("import sys; from toolkit.edge.runtime import open_model; "
            f"open_model({str(model_path)!r}, 'cuda'); assert 'torch' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr


def dft_model(path: Path) -> Path:
    """float [N, 16] → MatMul → Unsqueeze → DFT: CUDA has no DFT kernel, so that node runs on the CPU."""
    weight = numpy_helper.from_array(np.eye(16, dtype=np.float32), "w")
    axes = numpy_helper.from_array(np.array([-1], dtype=np.int64), "axes")
    nodes = [helper.make_node("MatMul", ["z", "w"], ["m"], name="mm"),
             helper.make_node("Unsqueeze", ["m", "axes"], ["u"], name="unsqueeze"),
             helper.make_node("DFT", ["u"], ["image"], name="dft", axis=1)]
    graph = helper.make_graph(nodes, "dft", [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 16, 2])], [weight, axes])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


@pytest.mark.gpu
def test_partial_placement_is_marked_and_refused_when_strict(tmp_path):
    need("cuda")
    path = dft_model(tmp_path / "dft.onnx")
    args = ["bench", "--model", str(path), "--provider", "cuda", "--batch-size", "2", "--runs", "2", "--no-roof"]
    marked = CliRunner().invoke(app, [*args, "--json"])
    assert marked.exit_code == 0, marked.stderr
    row = json.loads(marked.stdout)["rows"][0]
    assert row["placement_ok"] is False and row["compute_elsewhere"] == ["DFT dft on CPU"]
    strict = CliRunner().invoke(app, [*args, "--strict-placement"])
    assert strict.exit_code == 1 and "--strict-placement" in strict.stderr
    assert len(strict.stderr.strip().splitlines()) == 1
