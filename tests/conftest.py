"""Shared fixtures: small data the tests make themselves, and one freshly initialised exported CNN."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from toolkit.edge.data.datasets import CIFAR10_LABELS

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "datasets"


def write_class_tree(root: Path, per_class: int = 10, size=(32, 32), seed: int = 0, classes=CIFAR10_LABELS) -> Path:
    """A class-per-folder tree of small JPEGs whose colour depends on the class, so a model can learn it."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        base = np.array([(c * 53) % 256, (c * 97) % 256, (c * 151) % 256], dtype=np.float64)
        for i in range(per_class):
            img = np.clip(base + rng.normal(0, 20, (*size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / f"{i:04d}.jpg", quality=90)
    return root


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
    """A tiny uint8-image classifier (tests/test_bench.py's tiny_classifier), with no shipped models
    in reach and a cache folder of its own; shared by the OpenVINO and streams tests."""
    import toolkit.zoo as zoo
    from tests.test_bench import tiny_classifier  # here, not at the top: test_bench imports this module

    monkeypatch.setattr(zoo, "MODELS_DIR", tmp_path / "no-models")
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "cache"))
    return tiny_classifier(tmp_path / "tiny.onnx")
