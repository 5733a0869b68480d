"""`Model` is the runtime interface: nothing outside toolkit/edge/runtime/ reaches into a session or
compares provider names; one `open_model` picks the runtime from one provider table; the CLI's
`eval` and `toolkit.evaluate` go through one function; `toolkit.open_model` takes every option the
CLI has; load errors keep the runtime's reason."""

from __future__ import annotations

import ast
import inspect
import json
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import toolkit
from tests.helpers import REPO, colour_classifier, tiny_classifier, write_class_tree
from toolkit.cli import app
from toolkit.edge import options
from toolkit.edge.runtime import (
    PROVIDER_TABLE,
    Model,
    ModelError,
    ProviderError,
    TensorSpec,
    open_model,
    registry,
)
from toolkit.edge.runtime.model import CompiledPrecisions, Placement
from toolkit.edge.runtime.openvino import version as openvino_version
from toolkit.edge.runtime.ort import reason
from toolkit.edge.runtime.streams import Runner

PACKAGE = REPO / "toolkit"
RUNTIME = PACKAGE / "edge" / "runtime"
PROVIDER_NAMES = set(PROVIDER_TABLE)
# Expressions that hold a provider (or the runtime behind it): compared against a literal, they
# re-state a rule the provider table holds.
PROVIDER_WORDS = ("provider", "backend", "runtime")
# `cpu` and `cuda` also name torch's devices (the training recipe's --device): a set of only those
# is not a set of providers.
TORCH_DEVICES = {"cpu", "cuda"}


# ----------------------------------------------------------------------------- the scan

def _literals(node: ast.AST) -> set[str]:
    """Provider names written as a string literal or a tuple/list/set of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value} & PROVIDER_NAMES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return set().union(*(_literals(e) for e in node.elts)) if node.elts else set()
    return set()


def _inside_literal_type(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Within `Literal[...]`: a declaration of a closed set of names (toolkit.edge.options), not a rule."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("Literal"):
            return True
    return False


def violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    where = path.relative_to(REPO)
    found = []
    for node in ast.walk(tree):
        line = f"{where}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Attribute) and node.attr == "session":
            found.append(f"{line}: reads .session ({ast.unparse(node)})")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("get_inputs", "get_outputs", "InferenceSession"):
            found.append(f"{line}: calls {node.func.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr") \
                and node.args and any(word in ast.unparse(node.args[0]).lower() for word in ("model", "session")):
            found.append(f"{line}: probes a model with {ast.unparse(node)}")
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            named = [o for o in operands if _literals(o)]
            others = " ".join(ast.unparse(o).lower() for o in operands if not _literals(o))
            if named and any(word in others for word in PROVIDER_WORDS):
                found.append(f"{line}: compares a provider with a literal ({ast.unparse(node)})")
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(_literals(node)) >= 2 \
                and len(_literals(node)) == len(node.elts) and not _literals(node) <= TORCH_DEVICES \
                and not _inside_literal_type(node, parents):
            found.append(f"{line}: a set of provider names written out ({ast.unparse(node)})")
    return found


def test_nothing_outside_the_runtime_package_reaches_into_a_session_or_compares_provider_names():
    files = [p for p in sorted(PACKAGE.rglob("*.py")) if not p.is_relative_to(RUNTIME)]
    found = [v for path in files for v in violations(path)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("source, expected", [
    ("model.session.run(None, feeds)", "reads .session"),
    ("session.get_outputs()", "calls get_outputs"),
    ("ort.InferenceSession(path)", "calls InferenceSession"),
    ("getattr(model, 'runtime_precisions', None)", "probes a model"),
    ("provider == 'openvino'", "compares a provider"),
    ("row['provider'] in ('cpu', 'openvino')", "compares a provider"),
    ("'openvino' not in (provider or [])", "compares a provider"),
    ("CPU_SIDE = ('cpu', 'openvino')", "a set of provider names"),
])
def test_the_scan_catches_each_pattern(tmp_path, monkeypatch, source, expected):
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    (tmp_path / "probe.py").write_text(source + "\n")
    assert any(expected in v for v in violations(tmp_path / "probe.py")), violations(tmp_path / "probe.py")


def test_the_scan_leaves_other_meanings_of_the_same_words_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    (tmp_path / "probe.py").write_text("Provider = Literal['cpu', 'cuda']\nif target != 'cpu': pass\n"
                                       "device = 'cuda' if cfg.device == 'cuda' else 'cpu'\n"
                                       "check(self.device in ('cpu', 'cuda'))\n")
    assert violations(tmp_path / "probe.py") == []


# ----------------------------------------------------------------------------- one table, one open_model

def test_one_provider_table_for_the_cli_and_the_runtimes():
    assert tuple(PROVIDER_TABLE) == options.PROVIDERS
    for name, facts in PROVIDER_TABLE.items():
        assert facts.runtime in registry.RUNTIMES, name
    for module in registry.RUNTIMES.values():
        assert callable(__import__(module, fromlist=["open_runtime"]).open_runtime)
    assert registry.runtime_of("cuda") == "onnxruntime" and registry.runtime_of("openvino") == "openvino"
    assert registry.providers_with(schedule=True) == ["cpu", "openvino"]
    assert registry.cpu_provider_of("openvino") == "openvino" and registry.cpu_provider_of("onnxruntime") == "cpu"
    with pytest.raises(ProviderError, match="unknown provider 'tpu'"):
        registry.runtime_of("tpu")


class EchoModel(Model):
    """A runtime that returns its input: what a new runtime module provides."""

    def make_runner(self) -> Runner:
        return Runner(self.schedule, [None], lambda _, feeds: list(feeds.values()))

    def placement(self) -> Placement:
        return Placement("Echo", {"Echo": 1})


def test_a_runtime_is_one_module_and_one_registry_entry(tmp_path, monkeypatch):
    module = types.ModuleType("echo_runtime")

    def open_runtime(path, provider, model_file, opts):
        spec = TensorSpec("image", "uint8", ("N", 32, 32, 3))
        return EchoModel(path=path, provider=provider, inputs=(spec,), outputs=(spec,),
                         metadata=model_file.metadata, schedule=opts.schedule)

    module.open_runtime = open_runtime
    monkeypatch.setitem(sys.modules, "echo_runtime", module)
    monkeypatch.setitem(registry.RUNTIMES, "echo", "echo_runtime")
    monkeypatch.setitem(registry.PROVIDER_TABLE, "echo", registry.ProviderFacts("echo", cpu_side=True))
    model = open_model(tiny_classifier(tmp_path / "tiny.onnx"), "echo")
    x = np.zeros((2, 32, 32, 3), np.uint8)
    assert model.runtime == "echo" and model.task == "classify" and model.run(x) is x
    assert model.placement().complete and model.cache_facts() == {} and not model.binds_io
    with pytest.raises(ProviderError, match="precision hint"):
        open_model(tmp_path / "tiny.onnx", "echo", precision_hint="f32")


def test_the_model_describes_itself_in_the_toolkits_terms(tmp_path):
    model = open_model(tiny_classifier(tmp_path / "tiny.onnx"), "cpu", threads=1)
    assert model.inputs == (TensorSpec("image", "uint8", ("N", 32, 32, 3)),)
    assert model.outputs == (TensorSpec("logits", "float32", ("N", 2)),)
    assert (model.runtime, model.provider, model.path, model.input_hw, model.output_width) == (
        "onnxruntime", "cpu", tmp_path / "tiny.onnx", (32, 32), 2)
    where = model.placement()
    assert where.complete and where.compute == {"CPU": ["Conv conv", "MatMul fc"]}
    feeds = [{"image": np.zeros((1, 32, 32, 3), np.uint8)}]
    assert model.first_run(feeds[0]) > 0 and not model.binds_io
    call = model.timed_call(feeds, io_binding=True)         # on the CPU there is no device to bind to
    assert call(0)[0].shape == (1, 2)


def test_compiled_precisions_are_a_placement():
    where = CompiledPrecisions.of("CPU", ["u8", "u8", "f32"])
    assert where.complete and where.facts() == {"placement": {"CPU f32": 1, "CPU u8": 2}, "placement_ok": True}


# ----------------------------------------------------------------------------- the API's open_model

def test_open_model_takes_every_option_the_cli_has():
    """Every option of infer, eval and bench that says how to open a model is a parameter."""
    opening = {"provider": "provider", "precision_hint": "precision_hint", "threads": "threads",
               "schedule": "schedule", "shape": "shapes"}
    api = set(inspect.signature(toolkit.open_model).parameters)
    for command in ("infer", "eval", "bench"):
        callback = next(c.callback for c in app.registered_commands
                        if (c.name or c.callback.__name__) == command)
        cli = set(inspect.signature(callback).parameters) & set(opening)
        assert {opening[name] for name in cli} <= api, (command, cli)


def test_open_model_options_reach_the_runtime(tiny):
    model = toolkit.open_model(tiny, "cpu", threads=2, schedule="2x3")
    assert model.schedule.spec == "2x3"
    with pytest.raises(ProviderError, match="precision hint"):
        toolkit.open_model(tiny, "cpu", precision_hint="bf16")
    with pytest.raises(ProviderError, match="tensorrt provider only"):
        toolkit.open_model(tiny, "cpu", shapes={"image": (1, 32, 32, 3)})
    with pytest.raises(ProviderError, match="cannot be shared evenly"):
        toolkit.open_model(tiny, "cpu", threads=3, schedule="2")


@pytest.mark.skipif(openvino_version() is None, reason="openvino is not installed")
def test_open_model_takes_the_openvino_precision_hint(tiny, tmp_path):
    model = toolkit.open_model(tiny, "openvino", threads=1, precision_hint="f32", cache_dir=tmp_path / "ov")
    assert model.runtime == "openvino" and model.precision_hint == "f32"      # type: ignore[attr-defined]
    assert all(key.startswith("CPU ") for key in model.placement().nodes)


# ----------------------------------------------------------------------------- one evaluate

def test_api_and_cli_evaluate_through_the_same_function(tmp_path):
    tree = write_class_tree(tmp_path / "tree", per_class=3)
    (tree / "cat" / "9999.jpg").write_bytes(b"not a picture")
    good = colour_classifier(tmp_path / "good.onnx")
    nan = colour_classifier(tmp_path / "nan.onnx", nan_when_dark=True)
    result = CliRunner().invoke(app, ["eval", "--model", str(good), "--model", str(nan), "--data", str(tree),
                                      "--split", "all", "--batch-size", "4", "--json"])
    assert result.exit_code == 1, result.stderr
    cli_errors = [line.removeprefix("error: ") for line in result.stderr.splitlines()]
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]

    skipped: list[str] = []
    evaluation = toolkit.evaluate(good, tree, "all", batch_size=4, on_error=skipped.append)
    with pytest.raises(ModelError) as caught:
        toolkit.evaluate(nan, tree, "all", batch_size=4)
    assert row["n"] == evaluation.n == 30 and row["accuracy"] == round(evaluation.accuracy, 5)
    assert evaluation.errors == skipped and len(skipped) == 1 and "9999.jpg" in skipped[0]
    assert sorted(cli_errors) == sorted([*skipped, str(caught.value)])
    assert "not finite" in str(caught.value)


def test_api_evaluate_refuses_a_folder_that_is_not_a_data_set(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        toolkit.evaluate(tiny_classifier(tmp_path / "tiny.onnx"), tmp_path / "nowhere")


# ----------------------------------------------------------------------------- load errors keep their reason

@pytest.fixture
def ir14(tmp_path) -> Path:
    """A toolkit classifier stamped with IR version 14, which this onnxruntime does not read."""
    path = colour_classifier(tmp_path / "ir14.onnx")
    proto = onnx.load(str(path))
    proto.ir_version = 14
    onnx.save(proto, str(path))
    from toolkit.edge.runtime.ort import load_failure
    if load_failure(path) is None:
        pytest.skip("this onnxruntime reads IR version 14")
    return path


def test_a_load_error_keeps_the_runtimes_reason(ir14):
    with pytest.raises(ModelError) as caught:
        toolkit.open_model(ir14)
    message = str(caught.value)
    assert "Unsupported model IR version: 14, max supported IR version: " in message, message
    assert "[ONNXRuntimeError]" not in message and "onnxruntime::" not in message and "\n" not in message


def test_infer_says_why_the_model_does_not_load(ir14, tmp_path):
    from PIL import Image
    Image.new("RGB", (32, 32), (200, 40, 40)).save(tmp_path / "red.png")
    result = CliRunner().invoke(app, ["infer", str(tmp_path / "red.png"), "--model", str(ir14)])
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {ir14}: cannot load model (Unsupported model IR version: 14, max supported IR "
                           "version: ") and line.endswith(")"), line
    assert "onnxruntime::" not in line


@pytest.mark.parametrize("message, expected", [
    (("[ONNXRuntimeError] : 1 : FAIL : Load model from /m.onnx failed:/onnxruntime_src/onnxruntime/core/graph/"
      "model.cc:256 onnxruntime::Model::Model(onnx::ModelProto&&, const onnxruntime::PathString&, const "
      "onnxruntime::logging::Logger&) Unsupported model IR version: 14, max supported IR version: 13\n"),
     "Unsupported model IR version: 14, max supported IR version: 13"),
    (("/onnxruntime_src/onnxruntime/python/onnxruntime_pybind_state.cc:729 void onnxruntime::python::"
      "RegisterTensorRTPluginsAsCustomOps(PySessionOptions&, const onnxruntime::ProviderOptions&) Please "
      "install TensorRT libraries."), "Please install TensorRT libraries."),
    ("[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from /m.onnx failed:Protobuf parsing failed.",
     "Protobuf parsing failed."),
    ("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input: image\n index: 1",
     "Got invalid dimensions for input: image"),
    ("x" * 400 + " the cause at the end", "x" * 400 + " the cause at the end"),
])
def test_onnxruntime_reasons_are_read_not_cut(message, expected):
    assert reason(RuntimeError(message)) == expected


def test_openvino_reasons_skip_the_frames():
    from toolkit.edge.runtime.openvino import reason as ov_reason
    said = 'Unable to read the model: "/m.onnx" Please check that model format is supported.'
    report = ("Exception from src/inference/src/cpp/core.cpp:132:\n"
              f"Exception from src/inference/src/dev/plugin.cpp:59:\n{said}\n\n")
    assert ov_reason(RuntimeError(report)) == said


def test_a_run_error_keeps_its_reason(tmp_path):
    model = open_model(tiny_classifier(tmp_path / "tiny.onnx"))
    with pytest.raises(Exception) as caught:
        model.run(np.zeros((1, 31, 32, 3), np.uint8))
    line = model.explain(caught.value)
    assert line.startswith("Got invalid dimensions for input: image") and "[ONNXRuntimeError]" not in line


def test_the_probe_graph_loads(tmp_path):
    """The provider probe writes an IR version every supported onnxruntime reads."""
    from toolkit.edge.runtime.open import _probe_model
    from toolkit.edge.runtime.ort import load_failure
    _probe_model(tmp_path / "probe.onnx")
    assert load_failure(tmp_path / "probe.onnx") is None
