"""Build commands (need torch, imported lazily inside each): export, train."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from toolkit.cli.common import _progress_factory, app, fail, quantize_option, require_train_extra, say, train_app
from toolkit.cli.size import parse_size, refused_input_size, size_option
from toolkit.edge.errors import first_line
from toolkit.edge.options import SPECTRAL_OPS, CalibrationMethod, Form, Int8Target, Precision
from toolkit.edge.quantize.config import QuantizeOptions

# ----------------------------------------------------------------------------- export

@app.command()
def export(
    model: str | None = typer.Option(None, help="A model of the zoo (e.g. cifar-cnn, dcgan) or a transform "
                                                   "(fft-lowpass, fft-spectrum, walsh-compress)."),
    precision: Precision = typer.Option("fp32", help="Classifiers and the generator."),
    weights: Path | None = typer.Option(None, help="Trained weights (safetensors); default: the shipped ones."),
    out: Path | None = typer.Option(None, help="Output .onnx (default: models/<name>[.precision].onnx)."),
    data: Path | None = typer.Option(None, help="Image tree for parity, calibration and the accuracy guard "
                                                   "(default: data/cifar10-png/train)."),
    preprocess: str | None = typer.Option(None, help="Fuse a transform before the classifier, e.g. fft-lowpass:0.5."),
    calibration_images: int = quantize_option("calibration_images"),
    calibration_method: CalibrationMethod = quantize_option("calibration_method"),
    max_drop: float = quantize_option("max_drop"),
    dynamic: bool = quantize_option("dynamic"),
    target: Int8Target = quantize_option("target", more_help="Default out: models/<name>.ov.int8.onnx (openvino), "
                                                             "models/<name>.trt.int8.onnx (tensorrt)."),
    radius: float = typer.Option(0.5, help="fft-lowpass: cut-off radius in (0, 1]."),
    keep: float = typer.Option(0.5, help="walsh-compress: fraction of coefficients kept per side, in (0, 1]."),
    size: tuple[str, str] | None = size_option("Transforms: image size H W (default 32 32); --module: the net's "
                                               "input H W."),
    form: Form = typer.Option("matmul", help="Transforms: DFT nodes (cpu only) or MatMuls (every provider)."),
    tta: bool = typer.Option(False, "--tta", help="Classifiers: average the logits of each image and its mirror "
                                                   "inside the graph (default out: models/<name>.tta.onnx)."),
    module: str | None = typer.Option(None, help="Your classifier instead of --model: FILE.py:NAME or "
                                                    "package.module:NAME (a class or factory taking no arguments)."),
    input_size: tuple[str, str] | None = refused_input_size(),
    labels: str | None = typer.Option(None, help="--module: label file (one per line) or a,b,c."),
    mean: str = typer.Option("0,0,0", help="--module: per-channel mean R,G,B of pixels scaled to [0, 1]."),
    std: str = typer.Option("1,1,1", help="--module: per-channel std R,G,B."),
):
    """Export a model to a self-describing ONNX file, gated on parity with PyTorch."""
    if (model is None) == (module is None):
        fail("give either --model NAME or --module FILE.py:NAME")
    import toolkit.zoo as zoo
    if model is not None and model not in (known := [*zoo.REGISTRY, *SPECTRAL_OPS]):
        fail(f"unknown model {model} (known: {', '.join(known)})")
    from toolkit.pytorch.export import TRANSFORM_MODELS, export_model
    if model not in TRANSFORM_MODELS:          # transforms are built without torch
        require_train_extra()
    hw = parse_size(size)
    quantize = QuantizeOptions(calibration_images=calibration_images, calibration_method=calibration_method,
                               max_drop=max_drop, dynamic=dynamic, target=target)
    if module is not None:
        _export_module(module, weights, hw, out, labels, mean, std, data, precision, quantize)
        return
    assert model is not None                    # exactly one of --model and --module, checked above
    try:
        result = export_model(model=model, precision=precision, weights=weights, out=out, data=data,
                              preprocess=preprocess, quantize=quantize, radius=radius, keep=keep, size=hw,
                              form=form, tta=tta, log=say,
                              progress=_progress_factory())
    except Exception as exc:  # noqa: BLE001  (every failure here has a one-line message meant for the user)
        fail(first_line(exc))
    typer.echo(result.describe())



def _export_module(module: str, weights: Path | None, input_size: tuple[int, int] | None, out: Path | None,
                   labels: str | None, mean: str, std: str, data: Path | None, precision: str,
                   quantize: QuantizeOptions) -> None:
    if weights is None or input_size is None or out is None:
        fail("--module needs --weights, --size H W and --out")
        return
    if quantize.target != "cpu" and precision != "int8":
        fail(f"--target {quantize.target} applies to int8 classifiers only")
    from toolkit.edge.wrap.wrapper import parse_labels, parse_triple
    from toolkit.pytorch.module_export import export_module
    try:
        export_module(module, weights, input_size, out, parse_labels(labels) if labels else None,
                      parse_triple(mean, "--mean"), parse_triple(std, "--std", positive=True), data,
                      precision=precision, quantize=quantize, log=say)
    except Exception as exc:  # noqa: BLE001  (every failure here has a one-line message meant for the user)
        fail(first_line(exc))


# ----------------------------------------------------------------------------- train

def _train_command(name: str, config_cls: type, trainer: str, doc: str, skip: tuple[str, ...] = ()) -> None:
    """Register `toolkit train <name>` with one option per field of `config_cls`: defaults and help
    texts are the dataclass's (toolkit/recipes.py), never restated here."""
    import dataclasses
    import inspect
    import typing

    import toolkit.zoo as zoo
    from toolkit.edge.options import help_text

    keyword = inspect.Parameter.KEYWORD_ONLY
    hints = typing.get_type_hints(config_cls)
    params = [inspect.Parameter(f.name, keyword, annotation=hints[f.name],
                                default=typer.Option(... if f.name == "data" else f.default,
                                                     help=help_text(config_cls, f.name)))
              for f in dataclasses.fields(config_cls) if f.name not in skip]
    params += [
        inspect.Parameter("out", keyword, annotation=Path, default=typer.Option(
            zoo.get(name).weights_path, help="Final weights (safetensors).")),
        inspect.Parameter("checkpoint", keyword, annotation=Path | None, default=typer.Option(
            None, help="Resumable checkpoint (default: OUT with .ckpt.safetensors).")),
        inspect.Parameter("resume", keyword, annotation=bool, default=typer.Option(
            False, help="Continue from the checkpoint.")),
        inspect.Parameter("nproc", keyword, annotation=int, default=typer.Option(
            1, help="Data-parallel training processes on this machine, started through torchrun "
                    "(--batch-size stays the global batch). Several machines: see README, Scaling out.")),
    ]

    def command(**options: Any) -> None:
        require_train_extra()
        import importlib

        from toolkit.pytorch.loop import Interrupted
        out, checkpoint, resume = options.pop("out"), options.pop("checkpoint"), options.pop("resume")
        nproc = options.pop("nproc")
        train = getattr(importlib.import_module(f"toolkit.pytorch.{trainer.split(':')[0]}"), trainer.split(":")[1])
        try:
            if nproc != 1:
                _launch(name, nproc, config_cls(**options), skip,
                        {"out": out, "checkpoint": checkpoint, "resume": resume})
                return
            train(config_cls(**options), out, checkpoint, resume)
        except Interrupted as exc:
            fail(str(exc), 130)
        except (FileNotFoundError, ValueError) as exc:
            fail(str(exc))
        except RuntimeError as exc:
            from toolkit.pytorch.distributed import lost_peer
            if (line := lost_peer(exc)) is None:
                raise
            fail(line)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = doc
    train_app.command(name)(command)


def _launch(name: str, nproc: int, cfg: Any, skip: tuple[str, ...], outputs: dict[str, Any]) -> None:
    """`toolkit train NAME … --nproc N`: check what can be checked here, then run the same command
    without --nproc in N processes under torchrun."""
    import dataclasses

    from toolkit.pytorch import distributed
    from toolkit.recipes import check_outputs
    if nproc < 1:
        fail(f"--nproc must be ≥ 1, got {nproc}")
    if distributed.under_torchrun():
        fail("--nproc: this process already runs under torchrun, which sets the number of processes")
    cfg.validate()
    check_outputs(outputs["out"], outputs["checkpoint"], outputs["resume"])
    distributed.World(0, nproc).check_batch(cfg.batch_size)
    argv = ["train", name]
    for key, value in [*dataclasses.asdict(cfg).items(), *outputs.items()]:
        flag = "--" + key.replace("_", "-")
        if key in skip:
            continue
        if isinstance(value, bool):
            argv.append(flag if value else f"--no-{flag[2:]}")
        elif value is not None:
            argv += [flag, str(value)]
    failed = distributed.launch(nproc, argv)
    if failed:
        fail(failed)


def _register_train_commands() -> None:
    from toolkit.recipes import ClassifierConfig, GanConfig, ResNetConfig
    _train_command("cifar-cnn", ClassifierConfig, "train_classifier:train_classifier",
                   "Train the paper's CIFAR-10 CNN; validation accuracy is reported after every epoch.")
    _train_command("cifar-resnet", ResNetConfig, "train_classifier:train_classifier",
                   "Train the residual CIFAR-10 classifier (~2 M parameters; about 18 minutes on 2 CPU cores, "
                   "validated every 3 epochs).", skip=("preprocess",))
    _train_command("dcgan", GanConfig, "train_gan:train_gan",
                   "Train the DCGAN generator and discriminator; a sample grid is written every epoch.")


_register_train_commands()
