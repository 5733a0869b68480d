"""Streams and micro-batches (toolkit/edge/runtime/streams.py): the schedule's arithmetic and spelling, the
same outputs as one call on both CPU runtimes, strict refusals, and `bench --schedule` rows.

Run: .venv/bin/pytest tests/test_streams.py
"""

import json
import threading

import numpy as np
import pytest
from typer.testing import CliRunner

from toolkit.cli import app
from toolkit.edge.runtime import ProviderError, open_model
from toolkit.edge.runtime.openvino import version as openvino_version
from toolkit.edge.runtime.streams import PLAIN, Runner, Schedule, batch_of

needs_openvino = pytest.mark.skipif(openvino_version() is None, reason="openvino is not installed")


@pytest.mark.parametrize("text, streams, micro, label", [
    ("1", 1, 0, None), ("2", 2, 0, "2 streams"), ("2x32", 2, 32, "2 streams × 32"),
    ("1x16", 1, 16, "1 stream × 16"), (" 4X8 ", 4, 8, "4 streams × 8"), ("2×4", 2, 4, "2 streams × 4")])
def test_parse_and_label(text, streams, micro, label):
    schedule = Schedule.parse(text)
    assert (schedule.streams, schedule.micro_batch, schedule.label) == (streams, micro, label)
    assert Schedule.parse(schedule.spec) == schedule


@pytest.mark.parametrize("text", ["0", "x", "2x", "2x-1", "-1", "abc", "", "1.5", "2x3x4"])
def test_parse_refuses(text):
    with pytest.raises(ValueError):
        Schedule.parse(text)


def test_parts_cover_the_batch_in_order():
    assert Schedule(2, 0).parts(5) == [slice(0, 3), slice(3, 5)]
    assert Schedule(1, 4).parts(10) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert Schedule(2, 64).parts(8) == [slice(0, 8)]
    assert Schedule(2, 3).parts(0) == [slice(0, 0)]
    for n in range(1, 40):
        for schedule in (Schedule(2, 0), Schedule(3, 5), Schedule(1, 7)):
            covered = np.concatenate([np.arange(n)[part] for part in schedule.parts(n)])
            assert covered.tolist() == list(range(n))
    assert Schedule(2).threads_per_stream(4) == 2
    with pytest.raises(ValueError, match="evenly"):
        Schedule(2).threads_per_stream(3)


def test_runner_uses_one_handle_per_stream_at_a_time():
    """Two streams never hold the same handle at once; outputs come back in the batch's order."""
    busy: set[int] = set()
    lock = threading.Lock()

    def call(handle, feeds):
        with lock:
            assert handle not in busy
            busy.add(handle)
        try:
            return [feeds["x"] * 2, feeds["x"][:, :1]]
        finally:
            with lock:
                busy.discard(handle)

    runner = Runner(Schedule(2, 3), [0, 1], call)
    x = np.arange(22).reshape(11, 2)
    doubled, first = runner({"x": x})
    np.testing.assert_array_equal(doubled, x * 2)
    np.testing.assert_array_equal(first, x[:, :1])
    with pytest.raises(ValueError, match="first axis"):
        batch_of({"a": np.zeros((2, 3)), "b": np.zeros((3, 3))})


@pytest.mark.parametrize("provider", ["cpu", pytest.param("openvino", marks=needs_openvino)])
def test_same_outputs_as_one_call(tiny, provider):
    x = np.random.default_rng(0).integers(0, 256, (11, 32, 32, 3), dtype=np.uint8)
    reference = open_model(tiny, provider, threads=2).run(x)
    for schedule in (Schedule(2, 0), Schedule(2, 3), Schedule(1, 4), Schedule(2, 64)):
        model = open_model(tiny, provider, threads=2, schedule=schedule)
        assert model.schedule == schedule
        np.testing.assert_array_equal(model.run(x), reference)
        np.testing.assert_array_equal(model.run(x[:1]), reference[:1])


def test_strict_refusals(tiny):
    with pytest.raises(ProviderError, match="evenly"):
        open_model(tiny, "cpu", threads=3, schedule=Schedule(2))
    with pytest.raises(ProviderError, match="evenly"):
        open_model(tiny, "cpu", threads=2, schedule=Schedule(4))
    with pytest.raises(ProviderError, match="cpu and openvino"):
        open_model(tiny, "cuda", threads=2, schedule=Schedule(2))
    assert open_model(tiny, "cpu", threads=2, schedule=PLAIN).schedule.plain


def test_bench_rows_per_schedule(tiny):
    result = CliRunner().invoke(app, ["bench", "--model", str(tiny), "--batch-size", "1", "--batch-size", "8",
                                      "--schedule", "1", "--schedule", "2x4", "--schedule", "1x8", "--threads", "2",
                                      "--runs", "2", "--warmup", "0", "--no-roof", "--json"])
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    # 2x4 cuts only batch 8; 1x8 cuts neither, so it makes no row.
    assert [(r["batch_size"], r["schedule"]) for r in rows] == [(1, None), (8, None), (8, "2 streams × 4")]


@pytest.mark.parametrize("args, message", [
    (["--schedule", "2y3"], "--schedule"), (["--schedule", "0"], "--schedule"),
    (["--schedule", "2x4", "--provider", "cuda"], "cpu and openvino")])
def test_bench_schedule_errors(tiny, args, message):
    result = CliRunner().invoke(app, ["bench", "--model", str(tiny), "--runs", "1", "--no-roof", *args])
    assert result.exit_code != 0 and message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_python_api_takes_a_spec(tiny):
    import toolkit

    model = toolkit.open_model(tiny, threads=2, schedule="2x3")
    assert model.schedule == Schedule(2, 3)
    with pytest.raises(ValueError):
        toolkit.open_model(tiny, schedule="fast")
    doc = toolkit.bench(tiny, batch_sizes=[6], schedules=["1", "2x3"], threads=2, runs=2, warmup=0, roof=False)
    assert [r["schedule"] for r in doc["rows"]] == [None, "2 streams × 3"]


@needs_openvino
def test_openvino_static_shapes_are_bounded(tiny, monkeypatch):
    """OpenVINO compiles the model again for each input shape it runs (faster kernels), at most
    MAX_STATIC_SHAPES of them; later shapes run on the dynamic compile, with the same results."""
    from toolkit.edge.runtime import openvino

    monkeypatch.setattr(openvino, "MAX_STATIC_SHAPES", 3)
    model = open_model(tiny, "openvino", threads=2)
    reference = open_model(tiny, "cpu", threads=2)
    x = np.random.default_rng(1).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    for n in range(1, 8):
        np.testing.assert_allclose(model.run(x[:n]), reference.run(x[:n]), atol=1e-4, rtol=1e-4)
    assert model.static_shapes is not None and len(model.static_shapes.compiled) == 3
    assert len(model.runner.first) == 4             # one request per compile: 3 static + the dynamic one
