"""`toolkit optimize`: the split, the selection rule and its ties, the time budget, each bad
input, and the deployment a winner carries (used by default by open_model, infer and bench)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.helpers import DATA, colour_classifier, foreign_classifier, write_class_tree
from toolkit.cli import app
from toolkit.edge.optimize import OptimizeError, OptimizeOptions, optimize
from toolkit.edge.optimize import budget as timebox
from toolkit.edge.optimize.candidates import Candidate, make_candidates
from toolkit.edge.optimize.select import accept, choose, drop_interval, wilson
from toolkit.edge.optimize.split import deal, split_parts
from toolkit.edge.runtime import ModelError, Schedule, open_model
from toolkit.edge.runtime.deployment import DEPLOYMENT_KEY, Deployment, settle

runner = CliRunner(env={"COLUMNS": "200"})
CPU_ONLY = OptimizeOptions(providers=("cpu",))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A class-per-folder tree of 20 images per class: 2 validation images per class."""
    return write_class_tree(tmp_path_factory.mktemp("data"), per_class=20)


@pytest.fixture
def model(tmp_path):
    return colour_classifier(tmp_path / "colour.onnx")


# ----------------------------------------------------------------------------- the split

def test_deal_is_disjoint_balanced_and_seeded():
    labels = np.repeat(np.arange(5), 7)
    selection, report = deal(labels, seed=3)
    assert not set(selection) & set(report) and len(selection) + len(report) == len(labels)
    for c in range(5):
        assert abs(np.sum(labels[selection] == c) - np.sum(labels[report] == c)) <= 1
    again = deal(labels, seed=3)
    assert np.array_equal(again[0], selection) and np.array_equal(again[1], report)
    assert not np.array_equal(deal(labels, seed=4)[0], selection)


def test_split_parts_of_a_tree_are_disjoint_files(tree):
    from toolkit.edge.data.datasets import CIFAR10_LABELS
    parts = split_parts(tree, True, CIFAR10_LABELS, seed=0)
    sel, rep = set(parts.selection.files or []), set(parts.report.files or [])
    assert sel and rep and not sel & rep and len(sel) + len(rep) == 20
    assert set(parts.selection.files or []) == set(split_parts(tree, True, CIFAR10_LABELS, seed=0).selection.files
                                                   or [])


# ----------------------------------------------------------------------------- the selection rule

def _measured(kind: str, rounds: list[float], size: int, order: int, **extra) -> Candidate:
    c = Candidate(kind, "cpu", order=order, status="accepted", **extra)
    c.rounds, c.row = rounds, {"file_size_bytes": size}
    return c


def test_the_fastest_wins_when_the_gap_exceeds_the_noise():
    slow = _measured("int8-cpu", [2.0, 2.02, 1.98], size=100, order=1)
    fast = _measured("fp32", [1.0, 1.01, 0.99], size=400, order=0)
    winner, tied = choose([slow, fast], "latency")
    assert winner is fast and tied == [fast]
    winner, _ = choose([_measured("a", [900.0, 910.0], 1, 0), _measured("b", [1000.0, 1005.0], 9, 1)], "throughput")
    assert winner.kind == "b"


def test_a_tie_within_noise_goes_to_the_smaller_file_whatever_measured_faster():
    for small_rounds in ([1.1, 0.95, 1.05], [0.9, 1.05, 0.95]):    # the small file slower, then faster
        big = _measured("fp32", [1.0, 1.0, 1.0], size=400, order=0)
        small = _measured("int8-cpu", small_rounds, size=100, order=1)
        winner, tied = choose([big, small], "latency")
        assert winner is small and {id(c) for c in tied} == {id(big), id(small)}


def test_a_consistent_gap_is_not_noise_but_a_gap_under_the_floor_is_a_tie():
    big = _measured("fp32", [1.0, 1.3, 0.9], size=400, order=0)          # a load spike in round 2 hits both
    small = _measured("int8-cpu", [1.2, 1.56, 1.08], size=100, order=1)   # 20% slower in every round
    assert choose([big, small], "latency")[0] is big
    close = _measured("int8-cpu", [1.02, 1.326, 0.918], size=100, order=1)  # 2% slower in every round
    assert choose([big, close], "latency")[0] is close


def test_one_noisy_round_does_not_tie_a_schedule_twice_as_fast():
    plain = _measured("fp32", [84508.0, 90360.0, 89762.0, 87621.0, 96375.0], 400, 0, threads=2)
    micro = _measured("fp32", [75873.0, 82943.0, 48578.0, 59474.0, 71764.0], 400, 1, schedule=Schedule(1, 32),
                      threads=2)
    streams = _measured("fp32", [175515.0, 92727.0, 194816.0, 207561.0, 123742.0], 400, 2,
                        schedule=Schedule(2, 32), threads=2)
    winner, tied = choose([plain, micro, streams], "throughput")
    assert winner is streams and tied == [streams]


def test_a_tie_of_equal_files_goes_to_fewer_moving_parts_then_threads():
    streams = _measured("fp32", [1.0, 1.1, 0.9], 400, 0, schedule=Schedule(2, 32), threads=2)
    plain = _measured("fp32", [1.01, 1.11, 0.91], 400, 1, threads=2)
    one = _measured("fp32", [1.02, 1.12, 0.92], 400, 2, threads=1)
    assert choose([streams, plain, one], "latency")[0] is one


def test_files_of_nearly_the_same_size_leave_the_tie_to_the_search_order():
    cpu = _measured("int8-cpu", [1.2, 1.2, 1.2], size=2_028_127, order=7)
    openvino = _measured("int8-openvino", [1.4, 1.1, 1.3], size=2_019_680, order=9)
    assert choose([openvino, cpu], "latency")[0] is cpu


def test_the_first_round_is_a_warm_up():
    from toolkit.edge.optimize.select import round_values

    timings = [0.009, 0.011, 0.001, 0.001, 0.002, 0.002]
    assert round_values(timings, [2, 4, 6], batch=1, objective="latency") == pytest.approx([1.0, 2.0])


def test_acceptance_states_the_reason():
    c = Candidate("int8-cpu", "cpu", drop=0.8, agreement=0.99)
    accept(c, labelled=True, max_drop=0.5, min_agreement=None)
    assert c.status == "rejected" and c.reason == "drop 0.80 pt > 0.5 pt"
    c = Candidate("int8-cpu", "cpu", drop=None, agreement=0.95)
    accept(c, labelled=False, max_drop=0.5, min_agreement=0.98)
    assert c.status == "rejected" and "agreement 95.00% < 98.00%" in c.reason
    c = Candidate("fp16", "cpu", drop=0.1, agreement=0.999)
    accept(c, labelled=True, max_drop=0.5, min_agreement=None)
    assert c.status == "accepted"


def test_the_intervals():
    fp32 = np.array([1, 1, 1, 1, 0, 0, 1, 1] * 50, bool)
    mine = fp32.copy()
    mine[:8] = [0, 1, 1, 1, 1, 0, 1, 1]            # one lost, one gained per 400: drop 0
    drop, (low, high) = drop_interval(fp32, mine)
    assert drop == pytest.approx(0.0) and low < 0 < high
    assert drop_interval(fp32, fp32) == (0.0, (0.0, 0.0))
    low, high = wilson(99, 100)
    assert 0.94 < low < 0.99 < high <= 1.0


def test_candidates_come_cheapest_first_and_int8_files_stay_on_their_runtime():
    found = make_candidates(["cpu", "openvino"], "throughput", 256, 2)
    kinds = [c.kind for c in found]
    assert kinds[0] == "fp32" and kinds.index("int8-cpu") < kinds.index("fp16")
    assert all(c.provider == "openvino" for c in found if c.kind == "int8-openvino")
    assert {c.schedule.spec for c in found if c.provider == "cpu"} == {"1", "1x32", "2x32", "2"}
    assert {c.threads for c in make_candidates(["cpu"], "latency", 1, 2)} == {1, 2}


# ----------------------------------------------------------------------------- the deployment

def _deployed(path, deployment: Deployment | str):
    proto = onnx.load(str(path))
    proto.metadata_props.add(key=DEPLOYMENT_KEY, value=deployment if isinstance(deployment, str)
                             else deployment.to_json())
    onnx.save(proto, str(path))
    return path


def test_open_model_takes_the_deployment_and_explicit_options_win(model):
    _deployed(model, Deployment("cpu", schedule="2x16", threads=2))
    assert open_model(model).schedule == Schedule(2, 16)
    assert open_model(model, schedule=Schedule()).schedule.plain
    assert settle(Deployment("openvino", "2", 2, "bf16"), "cpu", None, None, None).precision_hint is None
    chosen = settle(Deployment("openvino", "2", 2, "bf16"), None, None, None, "f32")
    assert (chosen.provider, chosen.schedule, chosen.threads, chosen.precision_hint) == ("openvino", Schedule(2), 2,
                                                                                         "f32")


def test_a_malformed_deployment_is_one_line(model):
    _deployed(model, '{"provider": "tpu"}')
    with pytest.raises(ModelError, match="unknown provider 'tpu'"):
        open_model(model)


def test_infer_and_bench_run_a_file_as_its_deployment_says_unless_told_otherwise(tmp_path, model):
    from tests.helpers import SAMPLES
    from toolkit.edge.runtime import usable_providers

    if "openvino" not in usable_providers():
        pytest.skip("needs the OpenVINO runtime")
    _deployed(model, Deployment("openvino", threads=1, batch_size=4))
    assert ", openvino)" in runner.invoke(app, ["infer", str(SAMPLES), "--model", str(model)]).output
    assert ", cpu)" in runner.invoke(app, ["infer", str(SAMPLES), "--model", str(model), "--provider", "cpu"]).output
    result = runner.invoke(app, ["bench", "--model", str(model), "--runs", "3", "--warmup", "1", "--no-roof", "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout[result.stdout.index("{"):])["rows"][0]
    assert (row["provider"], row["batch_size"], row["threads"]) == ("openvino", 4, 1)
    result = runner.invoke(app, ["bench", "--model", str(model), "--provider", "cpu", "--runs", "3", "--warmup", "1",
                                 "--no-roof", "--json", "--batch-size", "2"])
    row = json.loads(result.stdout[result.stdout.index("{"):])["rows"][0]
    assert (row["provider"], row["batch_size"]) == ("cpu", 2)


# ----------------------------------------------------------------------------- bad input: one line, nothing written

@pytest.mark.parametrize("extra, message", [
    ([], "give labelled images with --data DIR, or --unlabeled DIR"),
    (["--data", "{tree}", "--max-drop", "-1"], "--max-drop"),
    (["--data", "{tree}", "--time-budget", "0"], "--time-budget 0: must be more than 0 seconds"),
    (["--data", "{tree}", "--out", "{file}"], "is a file; give a folder"),
    (["--data", "{tree}", "--time-budget", "0.01"], "too small to measure even fp32"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, tree, model, extra, message):
    (tmp_path / "file").write_text("x")
    words = [w.format(tree=tree, file=tmp_path / "file") for w in extra]
    out = [] if "--out" in words else ["--out", str(tmp_path / "out")]
    result = runner.invoke(app, ["optimize", str(model), *out, "--providers", "cpu", *words])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) <= 3   # one line (usage errors: a box)
    assert not (tmp_path / "out").exists()


def test_a_model_outside_the_contract_is_told_to_wrap(tmp_path, tree):
    foreign = foreign_classifier(tmp_path / "theirs.onnx")
    with pytest.raises(OptimizeError, match="toolkit wrap"):
        optimize(foreign, tmp_path / "out", data=tree, options=CPU_ONLY)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- the budget

@pytest.mark.slow
def test_a_tiny_budget_still_returns_a_winner_and_lists_the_rest(tmp_path, tree, model):
    doc = optimize(model, tmp_path / "out", data=tree, options=OptimizeOptions(providers=("cpu",), time_budget=6))
    statuses = {c["file"]: c["status"] for c in doc["candidates"]}
    assert doc["winner"]["precision"] == "fp32" and statuses["int8-cpu"] == statuses["fp16"] == "not tried"
    assert all(c["reason"] == "no time" for c in doc["candidates"] if c["status"] == "not tried")
    assert doc["elapsed_s"] <= 6 + 2
    assert (tmp_path / "out" / "model.onnx").is_file()


def test_estimates_follow_what_was_measured():
    assert timebox.build_estimate("fp32", 1e-3, 500, {}) == 0
    assert timebox.build_estimate("int8-openvino", 1e-3, 500, {"int8": 12.5}) == 12.5
    assert timebox.build_estimate("int8-cpu", 1e-3, 500, {}) > timebox.build_estimate("fp16", 1e-3, 500, {})


# ----------------------------------------------------------------------------- whole runs

@pytest.mark.slow
def test_a_whole_run_writes_the_winner_and_the_reports(tmp_path, tree, model):
    out = tmp_path / "out"
    result = runner.invoke(app, ["optimize", str(model), "--data", str(tree), "--out", str(out), "--providers", "cpu",
                                 "--time-budget", "40"])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "report.json").read_text())
    winner = doc["winner"]
    for key in ("file", "precision", "provider", "schedule", "threads", "p50_ms", "accuracy_drop", "drop_ci95",
                "agreement"):
        assert key in winner
    assert winner["drop_ci95"][0] <= winner["accuracy_drop"] <= winner["drop_ci95"][1]
    assert all({"precision", "provider", "schedule", "status", "reason"} <= set(c) for c in doc["candidates"])
    assert all(c["status"] != "rejected" or c["reason"] for c in doc["candidates"])
    meta = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    placed = json.loads(meta[DEPLOYMENT_KEY])
    assert placed["provider"] == winner["provider"] and placed["threads"] == winner["threads"]
    assert "toolkit bench --model" in (out / "report.md").read_text()
    assert open_model(out / "model.onnx").provider == winner["provider"]


@pytest.mark.slow
def test_unlabeled_mode_decides_by_agreement(tmp_path, model):
    flat = tmp_path / "flat"
    flat.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(flat / f"{i:03d}.png")
    doc = optimize(model, tmp_path / "out", unlabeled=flat, options=OptimizeOptions(providers=("cpu",),
                                                                                    time_budget=40))
    assert doc["winner"]["accuracy_drop"] is None and 0 <= doc["winner"]["agreement"] <= 1
    assert doc["min_agreement"] == 0.98 and not doc["labelled"]


@pytest.mark.slow
@pytest.mark.data
def test_the_paper_cnn_within_a_short_budget(tmp_path):
    if not DATA.is_dir():
        pytest.skip("needs data/ (make data)")
    doc = optimize("cifar-cnn", tmp_path / "out", data=DATA, options=OptimizeOptions(providers=("cpu",),
                                                                                     time_budget=90))
    assert doc["elapsed_s"] <= 90 and doc["winner"]["accuracy_drop"] is not None
    assert doc["split"]["selection"] == doc["split"]["report"] == 2500


def test_the_python_api_takes_the_same_options_and_refuses_in_one_line(tmp_path, model):
    import toolkit

    with pytest.raises(OptimizeError, match="give labelled images with --data DIR"):
        toolkit.optimize(model, tmp_path / "out", providers=["cpu"], max_drop=0.5)
    with pytest.raises(TypeError):
        toolkit.optimize(model, tmp_path / "out", data=tmp_path, no_such_option=1)
    assert not (tmp_path / "out").exists()
