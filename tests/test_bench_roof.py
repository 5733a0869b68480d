"""The measured roof: the C probe (built with the system compiler, or a clean refusal without one),
the runtime GEMM probe, each row's share, and the roof in the reports. Durations are shrunk so the
whole file runs in seconds.

Run: .venv/bin/pytest tests/test_bench_roof.py
"""

import json

import pytest
from typer.testing import CliRunner

from tests.helpers import tiny_classifier
from toolkit.cli import app
from toolkit.edge import bench
from toolkit.edge.bench import roof
from toolkit.edge.runtime.openvino import version as openvino_version

needs_compiler = pytest.mark.skipif(roof.find_compiler() is None, reason="no C compiler here")


@pytest.fixture
def quick_roof(monkeypatch, tmp_path):
    monkeypatch.setattr(roof, "PROBE_SECONDS", 0.002)
    monkeypatch.setattr(roof, "GEMM_SHAPES", ((64, 128, 32),))
    monkeypatch.setattr(roof, "GEMM_SECONDS", 0.002)
    monkeypatch.setattr(roof, "GEMM_REPEATS", 1)
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(roof, "DEFAULT_CACHE", tmp_path / "cache")


@needs_compiler
def test_probe_builds_once_and_measures(quick_roof, tmp_path):
    binary, how = roof.build_probe(tmp_path / "probe")
    assert binary is not None and binary.is_file() and "-march=native" in how
    again, _ = roof.build_probe(tmp_path / "probe")
    assert again == binary and binary.stat().st_mtime == again.stat().st_mtime
    rates, _ = roof.issue_rates(1, seconds=0.002, cache_dir=tmp_path / "probe")
    if rates is None:
        pytest.skip("the probe measures the clock only on x86-64")
    assert 0.3 < rates["clock_ghz"] < 10
    for kind in ("int8", "fp32", "bf16"):
        if kind in rates:
            # One to four instructions per cycle per core on every x86 core that has them.
            assert 0.2 < rates[kind]["per_cycle"] < 5 and rates[kind]["macs_per_s"] > 0
            assert rates[kind]["macs_per_instruction"] in (8, 16, 32, 64)


def test_no_compiler_is_said_not_hidden(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    binary, how = roof.build_probe(tmp_path)
    assert binary is None and "compiler" in how
    rates, why = roof.issue_rates(1, cache_dir=tmp_path)
    assert rates is None and "compiler" in why


def test_gemm_rates_per_runtime(quick_roof):
    rates = roof.gemm_rates("onnxruntime", 1, log=lambda m: None)
    assert set(rates) == {"int8", "fp32"} and all(v["macs_per_s"] > 0 and v["shape"] == [64, 128, 32]
                                                   for v in rates.values())
    if openvino_version():
        assert {"int8", "fp32"} <= set(roof.gemm_rates("openvino", 1, log=lambda m: None))


def test_shares_against_the_roof_of_the_computed_precision():
    measured = {"threads": 2, "isa": {"int8": {"macs_per_s": 1e12}, "fp32": {"macs_per_s": 2.5e11},
                                      "bf16": {"macs_per_s": 5e11}},
                "gemm": {"onnxruntime": {"int8": {"macs_per_s": 4e11}, "fp32": {"macs_per_s": 2e11}}}}
    row = {"precision": "int8", "provider": "cpu", "backend": "onnxruntime", "throughput": 10_000.0,
           "multiply_adds_per_item": 20_000_000}
    assert roof.shares(row, measured) == pytest.approx((0.2, 0.5))
    fp16 = {**row, "precision": "fp16"}
    assert roof.shares(fp16, measured) == pytest.approx((0.8, 1.0))
    bf16 = {**row, "precision": "fp32", "compute": "bf16", "backend": "openvino", "provider": "openvino"}
    isa, gemm = roof.shares(bf16, measured)
    assert isa == pytest.approx(0.4) and gemm is None
    assert roof.shares({**row, "provider": "cuda"}, measured) == (None, None)
    assert roof.shares({**row, "multiply_adds_per_item": None}, measured) == (None, None)
    assert roof.shares(row, None) == (None, None)


@pytest.mark.slow
@needs_compiler
def test_roof_in_the_run_and_the_report(quick_roof, tmp_path, monkeypatch):
    import toolkit.zoo as zoo

    monkeypatch.setattr(zoo, "MODELS_DIR", tmp_path / "no-models")
    path = tiny_classifier(tmp_path / "tiny.onnx")
    out = tmp_path / "results"
    result = CliRunner().invoke(app, ["bench", "--model", str(path), "--batch-size", "2", "--runs", "2",
                                      "--warmup", "0", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["roof"]["gemm"]["onnxruntime"]["int8"]["macs_per_s"] > 0
    row = doc["rows"][0]
    assert row["gemm_roof_share"] > 0
    if doc["roof"]["isa"]:
        assert row["isa_roof_share"] == pytest.approx(
            row["throughput"] * row["multiply_adds_per_item"] / doc["roof"]["isa"]["fp32"]["macs_per_s"])
    markdown = (out / f"{doc['machine']['slug']}.md").read_text()
    assert "## The measured roof" in markdown and "GEMM roof" in markdown
    assert "## Distance from the roof (largest batch)" in markdown
    assert bench.markdown_report(doc).count("| tiny |") == 2   # the results table and the distance table
