"""`toolkit export --module`: a user's own `nn.Module` exported as a contract classifier.

    toolkit export --module mynet.py:Net --weights net.safetensors --size 224 224 \\
                   --labels labels.txt --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --out net.onnx

The module (a class taking no arguments, or a factory function) is imported from a file or a
package, given its weights, put in eval mode and wrapped in the same uint8 NHWC → logits head as the
zoo's classifiers, then exported and gated on torch-vs-onnxruntime parity like them.

Weights are a safetensors file, or a `.pt`/`.pth` state dict read with
`torch.load(weights_only=True)` and nothing else: a file that needs full unpickling is refused and
its code never runs. (The module's own source file is the user's code and is imported as such.)
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np

from toolkit.edge.contract import ExportError
from toolkit.edge.errors import first_line, shown
from toolkit.edge.quantize.config import QuantizeOptions

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
SHOWN_KEYS = 4
PARITY_IMAGES = 256


# ----------------------------------------------------------------------------- the module

def _import_file(path: Path):
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"toolkit_user_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ExportError(f"{shown(path)}: cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module          # dataclasses and pickling look the module up by name
    sys.path.insert(0, str(path.parent.resolve()))     # so the file can import its neighbours
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        sys.path.remove(str(path.parent.resolve()))
    return module


def _import_package(name: str):
    """Import package.module the way `python -m toolkit` would, from the `toolkit` console script
    too: the script's sys.path starts with its own bin folder, not the working directory where the
    user's package lies."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    finally:
        if added:
            sys.path.remove(cwd)


def load_module(target: str):
    """Instantiate FILE.py:NAME or package.module:NAME (a class taking no arguments, or a factory)."""
    from torch import nn

    where, sep, name = target.rpartition(":")
    if not sep or not where or not name:
        raise ExportError(f"--module {target!r}: expected FILE.py:NAME or package.module:NAME")
    try:
        if where.endswith(".py") or os.sep in where or "/" in where:
            path = Path(where)
            if not path.is_file():
                raise ExportError(f"--module {shown(where)}: no such file")
            source = _import_file(path)
        else:
            source = _import_package(where)
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001  (user code may raise anything while importing)
        raise ExportError(f"cannot import {shown(where)}: {first_line(exc, typed=True)}") from None
    factory = getattr(source, name, None)
    if factory is None:
        raise ExportError(f"{shown(where)} has no {name!r}")
    if isinstance(factory, type) and not issubclass(factory, nn.Module):
        raise ExportError(f"{name} is a class but not a torch.nn.Module")
    if not callable(factory):
        raise ExportError(f"{name} is neither an nn.Module class nor a factory function")
    try:
        module = factory()
    except Exception as exc:  # noqa: BLE001  (user code may raise anything)
        raise ExportError(f"{name}() failed (it must take no arguments): {first_line(exc, typed=True)}") from None
    if not isinstance(module, nn.Module):
        raise ExportError(f"{name}() returned {type(module).__name__}, not an nn.Module")
    return module


# ----------------------------------------------------------------------------- the weights

def load_state_dict(path: str | os.PathLike) -> dict:
    """Tensors by name from safetensors, or from a weights-only torch file; never full unpickling."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{shown(path)}: no such weights file")
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise ExportError(f"{shown(path)}: weights must be {', '.join(WEIGHT_SUFFIXES)}")
    if suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001  (safetensors raises its own error types)
            raise ExportError(f"{shown(path)}: not a readable safetensors file "
                                    f"({first_line(exc, typed=True)})") from None
    try:
        # weights_only=True is explicit, so no environment variable can turn full unpickling back on.
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ExportError(f"{shown(path)}: refused: it needs full unpickling (it stores Python objects, "
                                f"not only tensors), which can run code; nothing in it was run. Save "
                                f"model.state_dict() instead, or use safetensors") from None
    except Exception as exc:  # noqa: BLE001  (corrupt zip, truncated file, …)
        raise ExportError(f"{shown(path)}: not a readable torch file ({first_line(exc, typed=True)})") from None
    return _tensors_of(obj, path)


def _tensors_of(obj, path: Path) -> dict:
    import torch

    if isinstance(obj, dict) and not all(torch.is_tensor(v) for v in obj.values()):
        nested = [obj[k] for k in ("state_dict", "model_state_dict", "model") if isinstance(obj.get(k), dict)]
        obj = nested[0] if nested else obj
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise ExportError(f"{shown(path)}: holds no state dict (a dict of tensors by parameter name)")
    return dict(obj)


def _listed(keys: list[str]) -> str:
    more = f", … ({len(keys)} in all)" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


def apply_weights(module, state: dict, where: str) -> None:
    """Load `state` strictly; a mismatch is one line naming the first few keys of each kind."""
    expected = module.state_dict()
    for prefix in ("module.", "model."):    # DataParallel and our own checkpoints prefix every key
        if not set(state) & set(expected) and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = [f"missing {_listed(missing)}"] if missing else []
        parts += [f"unexpected {_listed(unexpected)}"] if unexpected else []
        raise ExportError(f"{where}: weights do not fit the module: {'; '.join(parts)}")
    wrong = [f"{k} {list(state[k].shape)} vs {list(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise ExportError(f"{where}: weights do not fit the module: shape of {_listed(wrong)}")
    module.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------- export

def _parity_images(data, size: tuple[int, int], log) -> np.ndarray:
    from toolkit.edge.data.datasets import is_cifar_batches
    from toolkit.edge.wrap.wrapper import load_images
    from toolkit.pytorch.export import validation_images

    if data is None or is_cifar_batches(data):
        return validation_images(data, PARITY_IMAGES, size, log)
    return load_images(data, size, PARITY_IMAGES)


def export_module(module: str, weights: str | os.PathLike, input_size: tuple[int, int], out: str | os.PathLike,
                  labels: list[str] | None = None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                  data: str | os.PathLike | None = None, name: str | None = None, precision: str = "fp32",
                  quantize: QuantizeOptions | None = None, log=print) -> dict:
    """Export the user's classifier under the contract, gated on PyTorch parity: top-1 identical and
    max |Δlogit| ≤ 1e-3 on real images (`data`, else the default data folder). fp16 and int8 go
    through `quantize_classifier` (with `quantize`, at `precision`) from a temporary fp32 file."""
    out = Path(out)
    if precision == "fp32":
        return _export_fp32(module, weights, input_size, out, labels, mean, std, data, name or out.stem, log)
    from dataclasses import replace

    from toolkit.edge.quantize.classifier import quantize_classifier

    options = replace(quantize or QuantizeOptions(), precision=precision)

    fp32_tmp = out.with_name(f".{out.stem}.fp32.{os.getpid()}.onnx")
    try:
        info = _export_fp32(module, weights, input_size, fp32_tmp, labels, mean, std, data, name or out.stem, log)
        result = quantize_classifier(fp32_tmp, out, data, options, log=log)
    finally:
        fp32_tmp.unlink(missing_ok=True)
    log(result.describe())
    return {**info, "path": str(out), "precision": precision}


def _export_fp32(module: str, weights, input_size, out: Path, labels, mean, std, data, name: str, log) -> dict:
    import torch

    from toolkit.edge.contract import Parity, logit_gate, set_metadata, write_model
    from toolkit.pytorch.export import FP32_TOLERANCE, torch_logits
    from toolkit.pytorch.nets.layers import Classifier
    from toolkit.pytorch.onnx_export import torch_to_onnx

    height, width = (int(v) for v in input_size)
    if min(height, width) < 1:
        raise ExportError(f"--size {height} {width}: must be positive")
    if min(std) <= 0:
        raise ExportError("--std must be positive")
    net = load_module(module)
    apply_weights(net, load_state_dict(weights), shown(weights))
    net.eval()
    with torch.no_grad():
        try:
            probe = net(torch.zeros(2, 3, height, width))
        except Exception as exc:  # noqa: BLE001  (the user's forward may raise anything)
            raise ExportError(f"the module fails on a [2, 3, {height}, {width}] input: "
                                    f"{first_line(exc, typed=True)}") from None
    if not torch.is_tensor(probe) or probe.dim() != 2 or probe.shape[0] != 2:
        shape = list(probe.shape) if torch.is_tensor(probe) else type(probe).__name__
        raise ExportError(f"forward() must return class scores [N, K]; it returned {shape}")
    classes = int(probe.shape[1])
    if labels is not None and len(labels) != classes:
        raise ExportError(f"{len(labels)} labels given but the module outputs {classes} classes")
    labels = labels or [str(i) for i in range(classes)]
    head = Classifier(net, mean, std).eval()
    try:
        proto = torch_to_onnx(head, (torch.zeros((2, height, width, 3), dtype=torch.uint8),),
                              ["image"], ["logits"], log=log)
    except Exception as exc:  # noqa: BLE001  (the exporter raises many types for unsupported code)
        raise ExportError(f"torch.onnx.export failed: {first_line(exc, typed=True)}") from None
    # File names only: the metadata travels with the model and should not reveal the builder's folders.
    where, _, attr = module.rpartition(":")
    source = {"module": f"{Path(where).name if where.endswith('.py') else where}:{attr}",
              "weights": Path(weights).name, "mean": list(mean), "std": list(std)}
    set_metadata(proto, "classify", name, "fp32", labels=labels, source=json.dumps(source))
    images = _parity_images(data, (height, width), log)
    result: list[Parity] = []
    write_model(proto, out, logit_gate(torch_logits(head, images), images, "PyTorch", 1.0, FP32_TOLERANCE, result,
                                       ExportError))
    if not out.name.startswith("."):
        log(f"wrote {out}: uint8 [N, {height}, {width}, 3] → logits [N, {classes}]; {result[0].describe()} vs PyTorch")
    return {"path": str(out), "classes": classes, "parity": result[0].__dict__}
