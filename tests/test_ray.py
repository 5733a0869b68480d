"""`infer` and `eval` with `--engine ray` (toolkit.edge.scale): the same answers as the local engine,
image for image; a bad image is an error row and exit status 1, never a failed job; a rerun into the
same results folder classifies only what is new, into new shards; `--address` joins a running
cluster; without Ray installed, one line naming the extra. Listing sources and the results folder
are tested without a cluster."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import LABELS, REPO, colour_classifier, tiny_classifier, write_class_tree
from toolkit.cli import app
from toolkit.edge.scale import list_sources

HAVE_RAY = all(importlib.util.find_spec(m) is not None for m in ("ray", "pyarrow", "pandas"))
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="the ray extra is not installed (pip install 'toolkit[ray]')")
runner = CliRunner()


@pytest.fixture
def images(tmp_path) -> Path:
    """A class tree of 24 JPEGs (two labels) and one file that is not an image."""
    tree = write_class_tree(tmp_path / "images", per_class=12, classes=LABELS)
    (tree / "cat" / "broken.jpg").write_bytes(b"not a picture")
    return tree


@pytest.fixture
def model(tmp_path) -> Path:
    return tiny_classifier(tmp_path / "tiny.onnx")


@pytest.fixture(scope="module")
def ray_cluster():
    """One local cluster for the module's in-process runs (the engine uses a cluster it finds
    connected and leaves it running); its address, for a run that joins it from another process."""
    import ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _local_rows(images: Path, model: Path) -> dict[str, list]:
    result = runner.invoke(app, ["infer", str(images), "--model", str(model), "--json"])
    assert result.exit_code == 1 and "broken.jpg: not an image file" in result.stderr
    return {row["path"]: row["top"] for row in map(json.loads, result.stdout.splitlines())}


# ----------------------------------------------------------------------------- without a cluster

def test_without_ray_the_engine_is_one_line_naming_the_extra(monkeypatch, images, model, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    result = runner.invoke(app, ["infer", str(images), "--model", str(model), "--engine", "ray",
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: --engine ray needs the ray extra (ray missing): pip install 'toolkit[ray]'"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,message", [
    (["--out", "o"], "--out applies to --engine ray only"),
    (["--workers", "2"], "--workers applies to --engine ray only"),
    (["--engine", "ray"], "--engine ray writes its results to a folder: give --out DIR"),
    (["--engine", "ray", "--out", "o", "--json"], "--json prints the local engine's rows"),
])
def test_options_of_the_other_engine_are_refused_before_any_work(args, message, images, model):
    result = runner.invoke(app, ["infer", str(images), "--model", str(model), *args])
    assert result.exit_code == 1 and message in result.stderr and not result.stdout


def test_sources_are_folders_globs_and_file_lists_listed_like_the_local_engine(images, tmp_path):
    from toolkit.edge.data.images import expand_inputs

    errors: list[str] = []
    folder = list_sources([images], errors.append)
    assert folder == [str(p) for p in expand_inputs([images])] and len(folder) == 25
    assert list_sources([f"{images}/**/00*.jpg"], errors.append) == [p for p in folder if "/00" in p]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two files, one twice, and a folder\n{folder[3]}\n{folder[0]}\n{folder[3]}\n"
                       f"{images / 'dog'}\n")
    listed = list_sources([f"@{listing}"], errors.append)
    assert listed[:2] == [folder[3], folder[0]] and listed[2:] == [p for p in folder if "/dog/" in p]
    assert not errors
    assert list_sources([f"{images}/*.png", f"@{tmp_path / 'none.txt'}"], errors.append) == []
    assert len(errors) == 2 and "no file matches" in errors[0] and "none.txt: no such file" in errors[1]


def test_an_address_nothing_listens_on_is_one_line_at_once():
    import socket

    from toolkit.edge.scale import ScaleError
    from toolkit.edge.scale.engine import check_address

    with socket.socket() as probe:          # a port nothing listens on: bound, then let go
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(ScaleError, match=f"cannot join the Ray cluster at {address} \\(Connection refused\\)"):
            check_address(address)
    with pytest.raises(ScaleError, match="not host:port"):
        check_address("head-node")


@needs_ray
def test_a_results_folder_refuses_another_model_and_holds_no_half_written_shard(tmp_path, model):
    from toolkit.edge.scale.shards import ResultsFolder, ShardError, read_results

    out = tmp_path / "out"
    folder = ResultsFolder.open(out, "jsonl", model, 3)
    folder.write([{"path": "a.jpg", "top": [{"label": "cat", "prob": 1.0}], "error": None},
                  {"path": "b.jpg", "top": [], "error": "b.jpg: empty file"}])
    assert ResultsFolder.open(out, "jsonl", model, 3).done == {"a.jpg": None, "b.jpg": "b.jpg: empty file"}
    assert [row["path"] for row in read_results(out)] == ["a.jpg", "b.jpg"]
    other = tiny_classifier(tmp_path / "other.onnx", labels=["x", "y", "z"])
    for args, what in (((other, 3), "model_sha256"), ((model, 5), "top_k")):
        with pytest.raises(ShardError, match=f"another run \\({what}"):
            ResultsFolder.open(out, "jsonl", *args)
    with pytest.raises(ShardError, match="format"):
        ResultsFolder.open(out, "parquet", model, 3)

    def crash(tmp):
        tmp.write_bytes(b"PAR1 half")
        raise KeyboardInterrupt
    from toolkit.edge.data import fsio
    with pytest.raises(KeyboardInterrupt):
        fsio.atomic_write(out / "part-x-00000.parquet", crash)
    assert sorted(p.name for p in out.iterdir()) == ["part-" + folder.run + "-00000.jsonl", "results.json"]


# ----------------------------------------------------------------------------- on a cluster

@pytest.mark.slow
@needs_ray
def test_ray_infer_equals_the_local_engine_and_a_rerun_does_only_what_is_new(ray_cluster, images, model, tmp_path):
    local = _local_rows(images, model)
    out = tmp_path / "out"
    args = ["infer", str(images), "--model", str(model), "--engine", "ray", "--out", str(out), "--batch-size", "8"]
    first = runner.invoke(app, args)
    assert first.exit_code == 1, first.output
    assert first.stderr.count("error:") == 1 and "broken.jpg: not an image file" in first.stderr
    assert "25 images classified into 1 new shard " in first.stdout

    from toolkit.edge.scale import read_results
    rows = {row["path"]: row for row in read_results(out)}
    assert len(rows) == 25 and {p: r["top"] for p, r in rows.items() if not r["error"]} == local
    assert rows[str(images / "cat" / "broken.jpg")]["top"] == []
    shards = sorted(out.glob("part-*.parquet"))

    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "0 images classified into 0 new shards; 25 of 25" in again.stdout
    assert "1 image in" in again.stderr and "has an error row" in again.stderr
    assert sorted(out.glob("part-*.parquet")) == shards

    write_class_tree(images / "new", per_class=2, classes=["cat"], seed=1)     # 2 more images
    joined = subprocess.run([sys.executable, "-m", "toolkit", *args, "--address", ray_cluster], cwd=REPO,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "2 images classified into 1 new shard " in joined.stdout, joined.stderr
    assert joined.returncode == 1          # the earlier error row still counts
    assert len(read_results(out)) == 27 and len(list(out.glob("part-*.parquet"))) == 2
    import ray
    assert ray.is_initialized() and ray.cluster_resources().get("CPU") == 2     # the joined cluster runs on


@pytest.mark.slow
@needs_ray
def test_ray_eval_gives_the_local_accuracy(ray_cluster, tmp_path, model):
    tree = write_class_tree(tmp_path / "tree", per_class=20, classes=LABELS)
    colour = colour_classifier(tmp_path / "colour.onnx")          # ten CIFAR-10 labels, cat and dog among them
    base = ["eval", "--model", str(model), "--model", str(colour), "--data", str(tree), "--split", "val", "--json"]
    local = runner.invoke(app, base)
    on_ray = runner.invoke(app, [*base, "--engine", "ray", "--workers", "1"])
    assert local.exit_code == 0 and on_ray.exit_code == 0, on_ray.output
    assert on_ray.stdout == local.stdout and json.loads(on_ray.stdout.splitlines()[0])["n"] == 4


@pytest.mark.slow
@needs_ray
def test_a_pool_that_leaves_no_cpu_for_decoding_is_refused(ray_cluster, images, model, tmp_path):
    result = runner.invoke(app, ["infer", str(images), "--model", str(model), "--engine", "ray",
                                 "--out", str(tmp_path / "out"), "--workers", "2"])
    assert result.exit_code == 1
    assert "2 workers × 1 threads leave no CPU for decoding on a cluster of 2 CPUs (at most 1 workers" in result.stderr


@pytest.mark.slow
@needs_ray
def test_without_address_a_local_cluster_is_started_and_shut_down(images, model, tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "toolkit", "infer", str(images / "dog"), "--model", str(model),
                          "--engine", "ray", "--out", str(out), "--format", "jsonl"], cwd=REPO,
                         capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert "12 images classified into 1 new shard " in run.stdout
    assert len(list(out.glob("part-*.jsonl"))) == 1
