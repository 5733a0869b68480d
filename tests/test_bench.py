"""`toolkit bench`: statistics, the JSON document, provider refusal, interleaving, --compare, reports.

Models are tiny ONNX graphs built here, so nothing in models/ or ../shared is needed. The roof
(issue rates, GEMM) has its own tests in test_bench_roof.py; here it is off unless a test is about it.
Run: .venv/bin/pytest tests/test_bench.py
"""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image
from typer.testing import CliRunner

import toolkit.zoo as zoo
from tests.helpers import LABELS, tiny_classifier, write_class_tree
from toolkit.cli import app
from toolkit.edge import bench
from toolkit.edge.runtime import usable_providers

REQUIRED_ROW_KEYS = {"model", "precision", "provider", "backend", "batch_size", "compute", "p50_ms", "p90_ms",
                     "p99_ms", "mean_ms", "throughput", "min_ms", "threads", "warmup_runs", "runs", "rounds",
                     "session_create_s", "file_size_bytes", "accuracy", "placement", "timings_ms", "input", "shapes",
                     "isa_roof_share", "gemm_roof_share"}


def tiny_generator(path):
    """float32 z [N, 4] → Relu → Cast → uint8 [N, 4]: enough to exercise the latent-input path."""
    nodes = [helper.make_node("Relu", ["z"], ["r"]), helper.make_node("Cast", ["r"], ["image"], to=TensorProto.UINT8)]
    graph = helper.make_graph(nodes, "gen", [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 4])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    proto.metadata_props.add(key="toolkit.task", value="generate")
    onnx.save(proto, path)
    return path


@pytest.fixture
def model_path(tmp_path, monkeypatch):
    # No shipped weights or sample images leak in: inputs fall back to noise, torch to fresh weights.
    monkeypatch.setattr(zoo, "MODELS_DIR", tmp_path / "no-models")
    return tiny_classifier(tmp_path / "tiny.onnx")


def invoke(*args):
    return CliRunner().invoke(app, ["bench", *map(str, args)])


def run_json(*args, roof=False) -> dict:
    result = invoke(*args, "--json", *([] if roof else ["--no-roof"]))
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


# ----------------------------------------------------------------------------- statistics and timing

def test_latency_stats_on_known_timings():
    timings = [i / 1000 for i in range(1, 101)]          # 1 … 100 ms
    stats = bench.latency_stats(timings, batch_size=4)
    assert stats["p50_ms"] == pytest.approx(50.5)
    assert stats["p90_ms"] == pytest.approx(90.1)
    assert stats["p99_ms"] == pytest.approx(99.01)
    assert stats["mean_ms"] == pytest.approx(50.5)
    assert stats["min_ms"] == pytest.approx(1.0) and stats["max_ms"] == pytest.approx(100.0)
    assert stats["throughput"] == pytest.approx(4 / 0.0505)


def test_time_runs_excludes_warmup_and_honours_seconds():
    calls = []
    timings = bench.time_runs(calls.append, warmup=3, runs=7)
    assert len(calls) == 10 and len(timings) == 7
    assert calls == list(range(3)) + list(range(7))
    timings = bench.time_runs(lambda i: None, warmup=0, seconds=0.02)
    assert len(timings) >= bench.MIN_TIMED_RUNS


def test_rotating_buffers_are_distinct_and_large_enough():
    pool = np.random.default_rng(1).integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
    small = bench.rotating_buffers(pool, 1)                # 3 KB each: as many as fill BUFFER_BYTES
    assert len(small) == min(bench.MAX_BUFFERS, -(-bench.BUFFER_BYTES // pool[0].nbytes))
    assert len({b.ctypes.data for b in small}) == len(small)
    large = bench.rotating_buffers(pool, 256)               # more than the pool holds: drawn with replacement
    assert len(large) >= bench.MIN_BUFFERS and all(b.shape == (256, 32, 32, 3) for b in large)
    assert sum(b.nbytes for b in large) >= bench.BUFFER_BYTES
    assert all(b.flags.c_contiguous for b in large)


def test_multiply_adds_counts_conv_and_matmul(model_path):
    expected = 32 * 32 * 4 * 3 * 3 * 3 + 4 * 2            # conv output × (Cin·kh·kw) + matmul
    assert bench.multiply_adds(onnx.load(model_path)) == expected
    assert bench.multiply_adds(onnx.load(model_path), {"image": (5, 32, 32, 3)}) == 5 * expected


def test_machine_fingerprint():
    machine = bench.machine_info()
    assert machine["cores"] >= 1 and machine["cpu"]
    assert {"onnxruntime", "onnx", "torch", "openvino"} <= set(machine["versions"])
    assert machine["slug"].startswith(("cpu-", "gpu-")) and " " not in machine["slug"]


# ----------------------------------------------------------------------------- the command

def test_json_document_shape(model_path):
    doc = run_json("--model", model_path, "--batch-size", 1, "--batch-size", 3, "--runs", 4, "--warmup", 1)
    assert {"machine", "rows", "roof"} <= set(doc) and doc["roof"] is None
    assert len(doc["rows"]) == 2
    for row, batch in zip(doc["rows"], (1, 3)):
        assert set(row) >= REQUIRED_ROW_KEYS
        assert (row["model"], row["precision"], row["provider"], row["backend"], row["batch_size"]) == \
               ("tiny", "fp32", "cpu", "onnxruntime", batch)
        assert row["runs"] == 4 and len(row["timings_ms"]) == 4 and row["warmup_runs"] == 1
        assert row["min_ms"] <= row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["throughput"] == pytest.approx(batch * 1e3 / row["mean_ms"])
        assert set(row["placement"]) == {"CPU"} and row["shapes"] == {"image": [batch, 32, 32, 3]}
        assert row["accuracy"] is None and "uniform random pixels" in row["input"]
        assert row["file_size_bytes"] == model_path.stat().st_size


def test_interleaved_rounds_split_the_runs(model_path):
    doc = run_json("--model", model_path, "--batch-size", 1, "--batch-size", 2, "--runs", 6, "--rounds", 3,
                   "--warmup", 0)
    assert [(r["batch_size"], r["runs"], r["rounds"]) for r in doc["rows"]] == [(1, 6, 3), (2, 6, 3)]


def test_generator_gets_standard_normal_latents(model_path, tmp_path):
    doc = run_json("--model", tiny_generator(tmp_path / "gen.onnx"), "--batch-size", 2, "--runs", 2, "--warmup", 0)
    row = doc["rows"][0]
    assert row["model"] == "gen" and "standard-normal z of size 4" in row["input"]
    assert row["multiply_adds_per_item"] is None and row["accuracy"] is None


def test_accuracy_and_real_images_from_data(model_path, tmp_path):
    write_class_tree(tmp_path / "data", per_class=10, seed=2, classes=LABELS)
    doc = run_json("--model", model_path, "--batch-size", 2, "--runs", 2, "--warmup", 0, "--data", tmp_path / "data")
    row = doc["rows"][0]
    assert row["accuracy_n"] == 2 and 0.0 <= row["accuracy"] <= 1.0
    assert "validation images" in row["input"]


@pytest.mark.slow
def test_onnx_rows_do_not_import_torch(model_path):
    code = ("import sys; from toolkit.edge import bench; "
            f"bench.run_benchmark(bench.BenchConfig(models=[{str(model_path)!r}], batch_sizes=[1], runs=2, warmup=0, "
            "roof=False)); assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_torch_row_measured_in_the_same_run(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "MODELS_DIR", tmp_path / "no-models")
    path = tiny_classifier(tmp_path / "cnn.onnx", model_name=zoo.CIFAR_CNN.name, labels=zoo.CIFAR_CNN.labels)
    doc = run_json("--model", path, "--batch-size", 2, "--runs", 3, "--warmup", 1, "--torch")
    backends = [(r["backend"], r["batch_size"]) for r in doc["rows"]]
    assert backends == [("onnxruntime", 2), ("torch", 2)]
    torch_row = doc["rows"][1]
    assert torch_row["precision"] == "fp32" and torch_row["runs"] == 3 and torch_row["file"] is None
    assert torch_row["input"] == doc["rows"][0]["input"]


@pytest.mark.parametrize("provider", ["cuda", "tensorrt", "openvino"])
def test_unusable_provider_is_refused(model_path, provider):
    if provider in usable_providers():
        pytest.skip(f"{provider} is usable on this machine")
    result = invoke("--model", model_path, "--provider", provider, "--runs", 1)
    assert result.exit_code != 0
    assert provider in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr + result.stdout


def test_user_errors_are_one_line(model_path, tmp_path):
    for args in (["--runs", 2, "--seconds", 1], ["--compare", tmp_path / "missing.json"],
                 ["--precision-hint", "bf16"], ["--shape", "image"]):
        result = invoke("--model", model_path, "--no-roof", *args)
        assert result.exit_code != 0, args
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, args
    # A shape that does not fit is that model's error (one line); the run then has nothing to measure.
    for args, reason in ((["--shape", "image=1x32x32"], "has 3 dimensions"),
                         (["--shape", "other=1x2"], "not an input")):
        result = invoke("--model", model_path, "--no-roof", *args)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code != 0 and reason in lines[0] and "tiny.onnx" in lines[0], args
        assert all(line.startswith("error: ") for line in lines) and "Traceback" not in result.stderr, args
    # Values outside a closed set fail while the options are parsed, naming the choices.
    for args, choice in ((["--provider", "tpu"], "openvino"), (["--provider", "openvino", "--precision-hint", "fp8"],
                                                               "bf16")):
        result = invoke("--model", model_path, "--no-roof", *args)
        assert result.exit_code != 0 and choice in result.stderr and "Traceback" not in result.stderr, args
    result = invoke("--model", tmp_path / "absent.onnx", "--runs", 1)
    assert result.exit_code != 0 and "absent.onnx" in result.stderr


def test_compare_prints_ratio_per_row(model_path, tmp_path):
    doc = run_json("--model", model_path, "--batch-size", 1, "--batch-size", 2, "--runs", 3, "--warmup", 0)
    old = json.loads(json.dumps(doc))
    old["rows"][0]["p50_ms"] = doc["rows"][0]["p50_ms"] * 2
    old["rows"][0]["throughput"] = doc["rows"][0]["throughput"] / 2
    del old["rows"][0]["compute"]           # files written before the key existed still match
    del old["rows"][1]
    comparison = bench.compare_rows(doc, old)
    assert comparison[0]["speedup"] == pytest.approx(2.0) and comparison[0]["throughput_ratio"] == pytest.approx(2.0)
    assert comparison[1]["speedup"] is None

    old_path = tmp_path / "old.json"
    old_path.write_text(json.dumps(old))
    new = run_json("--model", model_path, "--batch-size", 1, "--batch-size", 2, "--runs", 3, "--warmup", 0,
                   "--compare", old_path)
    assert [c["batch_size"] for c in new["compare"]] == [1, 2]
    assert new["compare"][0]["speedup"] > 0 and new["compare"][1]["speedup"] is None
    result = invoke("--model", model_path, "--batch-size", 1, "--runs", 3, "--warmup", 0, "--compare", old_path,
                    "--no-roof")
    assert result.exit_code == 0 and "speed-up" in result.stdout and "new row" not in result.stdout


def test_reports_are_written_and_parse(model_path, tmp_path):
    out = tmp_path / "results"
    result = invoke("--model", model_path, "--batch-size", 1, "--batch-size", 4, "--runs", 3, "--warmup", 0,
                    "--out", out, "--verbose", "--no-roof")
    assert result.exit_code == 0, result.stderr
    assert "p50 ms" in result.stdout and "placement: tiny fp32 on onnxruntime cpu" in result.stdout
    slug = bench.machine_info()["slug"]
    summary = json.loads((out / f"{slug}.json").read_text())
    assert len(summary["rows"]) == 2 and all("timings_ms" not in r for r in summary["rows"])
    timings = json.loads((out / f"{slug}.runs.json").read_text())
    assert [len(r["timings_ms"]) for r in timings["rows"]] == [3, 3]
    markdown = (out / f"{slug}.md").read_text()
    assert "| model | precision | runtime |" in markdown and "## Machine" in markdown
    assert "## Node placement" in markdown and "CPU" in markdown
    with Image.open(out / f"{slug}.png") as png:
        png.verify()
        assert png.format == "PNG" and png.size[0] > 100
    assert not list(out.glob(".*tmp*")), "temp files left behind"


def test_summary_names_the_best_int8_runtime():
    def row(precision, backend, batch, p50, throughput, share=None):
        provider = "openvino" if backend == "openvino" else "cpu"
        return {"model": "cnn", "precision": precision, "provider": provider, "backend": backend, "batch_size": batch,
                "p50_ms": p50, "throughput": throughput, "isa_roof_share": share, "compute": None}
    doc = {"rows": [row("int8", "onnxruntime", 1, 0.08, 12_000), row("int8", "openvino", 1, 0.09, 11_000),
                    row("int8", "onnxruntime", 256, 15.0, 20_000, 0.38),
                    row("int8", "openvino", 256, 8.0, 33_000, 0.63),
                    row("fp32", "onnxruntime", 1, 0.13, 7_000), row("fp32", "onnxruntime", 256, 27.0, 9_500),
                    row("fp32", "torch", 1, 0.5, 2_000)]}
    (line,) = bench.summary_lines(doc)
    assert "p50 0.080 ms (onnxruntime cpu)" in line and "PyTorch eager 0.500 ms" in line
    assert "33,000 img/s (openvino), 63% of the measured int8 roof" in line and "onnxruntime int8 20,000" in line


def test_an_int8_file_for_one_runtime_runs_on_that_runtime(tmp_path):
    from toolkit.edge.bench.measure import _pairs

    def int8_file(name: str, target: str | None):
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        model = helper.make_model(graph)
        calibration = {"method": "minmax", **({"target": target} if target else {})}
        helper.set_model_props(model, {"toolkit.model": "m", "toolkit.precision": "int8",
                                       "toolkit.calibration": json.dumps(calibration)})
        onnx.save(model, tmp_path / name)
        return tmp_path / name

    ort_file, ov_file, trt_file = int8_file("m.int8.onnx", None), int8_file("m.ov.int8.onnx", "openvino"), \
        int8_file("m.trt.int8.onnx", "tensorrt")
    pairs = _pairs([ort_file, ov_file, trt_file], ["cpu", "openvino", "tensorrt"])
    assert sorted(pairs) == sorted([(ort_file, "cpu"), (ov_file, "openvino"), (trt_file, "tensorrt")])
    # Given alone, a file is measured everywhere it was asked for.
    assert sorted(p for _, p in _pairs([ov_file], ["cpu", "openvino"])) == ["cpu", "openvino"]
