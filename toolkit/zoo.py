"""The model registry: each model the toolkit knows is declared here, once.

Importing this module does not import torch (the inference path reads default paths and
contracts from it); `build()` does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.edge.data.datasets import CIFAR10_LABELS


def _models_dir() -> Path:
    """Where the shipped models are: $TOOLKIT_MODELS if set; else the checkout's models/ when the
    package runs from a source tree (editable install); else the copy an installed wheel carries
    in toolkit/models (package data, filled by `make models` before the wheel is built)."""
    if os.environ.get("TOOLKIT_MODELS"):
        return Path(os.environ["TOOLKIT_MODELS"])
    package = Path(__file__).resolve().parent
    if (package.parent / "pyproject.toml").is_file() and (package.parent / "models").is_dir():
        return package.parent / "models"
    return package / "models"


MODELS_DIR = _models_dir()
# File-name part of an int8 file made for a runtime other than onnxruntime's CPU (`--target`).
TARGET_SUFFIX = {"tensorrt": "trt", "openvino": "ov"}


@dataclass(frozen=True)
class ModelSpec:
    name: str                      # registry name, also `toolkit.model` in the ONNX metadata
    task: str                      # classify | generate | transform
    file_stem: str                 # models/<file_stem>.onnx, models/<file_stem>.safetensors
    input_size: tuple[int, int] = (32, 32)
    labels: list[str] = field(default_factory=list)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    latent_dim: int = 0

    def onnx_path(self, precision: str = "fp32", target: str = "cpu") -> Path:
        """models/<stem>[.trt|.ov][.<precision>].onnx: `target` names the int8 file of another runtime."""
        parts = [self.file_stem, *([TARGET_SUFFIX[target]] if target in TARGET_SUFFIX else []),
                 *([precision] if precision != "fp32" else [])]
        return MODELS_DIR / (".".join(parts) + ".onnx")

    @property
    def weights_path(self) -> Path:
        return MODELS_DIR / f"{self.file_stem}.safetensors"

    def build(self):
        """A freshly initialised torch module of this model (imports torch)."""
        if self.name == "cifar-cnn":
            from toolkit.pytorch.nets.cifar_cnn import CifarCNN
            return CifarCNN(num_classes=len(self.labels))
        if self.name == "cifar-resnet":
            from toolkit.pytorch.nets.resnet import CifarResNet
            return CifarResNet(num_classes=len(self.labels))
        if self.name == "dcgan":
            from toolkit.pytorch.nets.dcgan import Generator
            return Generator(latent_dim=self.latent_dim)
        raise KeyError(f"{self.name} has no trainable network")


CIFAR_CNN = ModelSpec(
    name="cifar-cnn", task="classify", file_stem="cifar_cnn", input_size=(32, 32),
    labels=list(CIFAR10_LABELS),
    # Per-channel statistics of the CIFAR-10 training set; applied inside the exported graph.
    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
)
CIFAR_RESNET = ModelSpec(
    name="cifar-resnet", task="classify", file_stem="cifar_resnet", input_size=(32, 32),
    labels=list(CIFAR10_LABELS), mean=CIFAR_CNN.mean, std=CIFAR_CNN.std,
)
DCGAN = ModelSpec(name="dcgan", task="generate", file_stem="dcgan", input_size=(64, 64), latent_dim=100)

REGISTRY = {spec.name: spec for spec in (CIFAR_CNN, CIFAR_RESNET, DCGAN)}


def default_classifier() -> Path:
    """The classifier `infer` and `eval` use without --model: the strongest shipped one (the
    residual net with flip averaging inside the graph), the file a user should deploy."""
    return MODELS_DIR / f"{CIFAR_RESNET.file_stem}.tta.onnx"


class UnknownModelError(KeyError):
    """A name the registry does not know. A KeyError for callers that catch one, but its text is the
    message itself: str() of a plain KeyError is the repr of its argument, quotes and all."""

    def __str__(self) -> str:
        return str(self.args[0])


def get(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name} (known: {', '.join(REGISTRY)})") from None
