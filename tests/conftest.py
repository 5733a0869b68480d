"""Shared fixtures: small data the tests make themselves, and one freshly initialised exported CNN.
Builders (plain functions) live in tests/helpers.py; this file holds fixtures and the `slow` rule."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

from pathlib import Path

import pytest

from tests.helpers import TORCH_FIXTURES, tiny_classifier, write_class_tree


@pytest.hookimpl(tryfirst=True)          # before `-m` deselects, so the mark counts there
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that asks for a fixture exporting with torch is slow, wherever it is written."""
    for item in items:
        if TORCH_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def class_tree(tmp_path_factory) -> Path:
    return write_class_tree(tmp_path_factory.mktemp("tree"), per_class=30)


@pytest.fixture(scope="session")
def fresh_weights(tmp_path_factory) -> Path:
    """Weights of a freshly initialised CNN (seeded), saved the way training saves them."""
    import torch

    import toolkit.zoo as zoo
    from toolkit.pytorch.checkpoint import atomic_save_tensors
    from toolkit.pytorch.checkpoint import prefixed as _prefixed

    torch.manual_seed(0)
    net = zoo.CIFAR_CNN.build()
    path = tmp_path_factory.mktemp("weights") / "cnn.safetensors"
    atomic_save_tensors(_prefixed("model", net.state_dict()), path, {"model": "cifar-cnn"})
    return path


@pytest.fixture(scope="session")
def fresh_onnx(tmp_path_factory, fresh_weights, class_tree) -> Path:
    from toolkit.pytorch.export import export_classifier

    out = tmp_path_factory.mktemp("onnx") / "cnn.onnx"
    export_classifier(out, fresh_weights, class_tree, log=lambda *_: None)
    return out


@pytest.fixture
def tiny(tmp_path, monkeypatch) -> Path:
    """A tiny uint8-image classifier (helpers.tiny_classifier), with no shipped models in reach and
    a cache folder of its own; shared by the OpenVINO and streams tests."""
    import toolkit.zoo as zoo

    monkeypatch.setattr(zoo, "MODELS_DIR", tmp_path / "no-models")
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "cache"))
    return tiny_classifier(tmp_path / "tiny.onnx")
