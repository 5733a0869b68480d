"""Rows of `bench` and `eval` that name the same model name apart by their files."""

from __future__ import annotations

import json

from typer.testing import CliRunner

import toolkit.zoo as zoo
from tests.helpers import LABELS, tiny_classifier, write_class_tree
from toolkit.cli import app
from toolkit.edge.bench.measure import name_files_apart
from toolkit.edge.bench.report import THROUGHPUT_NOTE, markdown_report

runner = CliRunner()


def test_name_files_apart_labels_only_names_that_cover_several_files():
    rows = [{"model": "theirs", "file": "a/theirs.onnx"}, {"model": "theirs", "file": "a/mine.onnx"},
            {"model": "theirs", "file": "a/mine.int8.onnx"}, {"model": "cifar-cnn", "file": "m/cifar_cnn.onnx"},
            {"model": "cifar-cnn", "file": "m/cifar_cnn.onnx"}]
    name_files_apart(rows)
    assert [r["model"] for r in rows] == ["theirs.onnx", "mine.onnx", "mine.int8.onnx", "cifar-cnn", "cifar-cnn"]


def test_name_files_apart_uses_the_path_where_file_names_repeat():
    rows = [{"model": "net", "file": "x/net.onnx"}, {"model": "net", "file": "y/net.onnx"}]
    name_files_apart(rows)
    assert [r["model"] for r in rows] == ["x/net.onnx", "y/net.onnx"]


def test_bench_rows_of_files_sharing_a_model_name_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "MODELS_DIR", tmp_path / "no-models")
    files = [tiny_classifier(tmp_path / name, model_name="theirs") for name in ("theirs.onnx", "mine.onnx")]
    result = runner.invoke(app, ["bench", *[a for f in files for a in ("--model", str(f))], "--batch-size", "1",
                                 "--runs", "2", "--warmup", "0", "--no-roof", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert sorted(r["model"] for r in doc["rows"]) == ["mine.onnx", "theirs.onnx"]
    assert THROUGHPUT_NOTE in markdown_report(doc)


def test_bench_table_says_how_img_per_s_is_computed(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "MODELS_DIR", tmp_path / "no-models")
    model = tiny_classifier(tmp_path / "tiny.onnx")
    result = runner.invoke(app, ["bench", "--model", str(model), "--batch-size", "1", "--runs", "2", "--warmup", "0",
                                 "--no-roof"])
    assert result.exit_code == 0, result.output
    assert "img/s: batch size ÷ the mean time per batch" in result.stdout


def test_eval_rows_of_files_with_the_same_name_show_their_paths(tmp_path):
    data = write_class_tree(tmp_path / "data", per_class=2, classes=LABELS)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = tiny_classifier(tmp_path / "a" / "net.onnx")
    second = tiny_classifier(tmp_path / "b" / "net.onnx")
    markdown = tmp_path / "acc.md"
    result = runner.invoke(app, ["eval", "--model", str(first), "--model", str(second), "--data", str(data),
                                 "--markdown", str(markdown)])
    assert result.exit_code == 0, result.output
    assert "a/net.onnx" in result.stdout and "b/net.onnx" in result.stdout
    text = markdown.read_text()
    assert "a/net.onnx" in text and "b/net.onnx" in text
