"""Runtime commands (onnxruntime only): infer, eval, generate, info, bench, transform."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from toolkit.cli.common import _one_line, _open, app, fail


# ----------------------------------------------------------------------------- infer / eval / generate / info

@app.command()
def infer(
    inputs: List[Path] = typer.Argument(..., help="Image files or folders (searched recursively)."),
    model: Optional[Path] = typer.Option(None, help="Classifier .onnx (default: the shipped models/cifar_cnn.onnx)."),
    top_k: int = typer.Option(3, "--top-k", min=1, help="How many labels to show per image."),
    provider: str = typer.Option("cpu", help="cpu | cuda | tensorrt | openvino (no silent fallback)."),
    precision_hint: Optional[str] = typer.Option(None, "--precision-hint", help="openvino: f32 (default) | bf16, which OpenVINO's CPU plugin would otherwise pick silently."),
    batch_size: int = typer.Option(64, min=1, help="Images per onnxruntime call."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per image on stdout."),
):
    """Classify images of any size with an ONNX classifier."""
    import json

    from toolkit import zoo
    from toolkit.core.data import expand_inputs
    from toolkit.core.infer import classify_files

    session = _open(model or zoo.CIFAR_CNN.onnx_path(), provider, precision_hint)
    files = expand_inputs(inputs)
    if not files:
        fail("no images found in the given paths")
    rows, failed = [], 0
    for pred in classify_files(session, files, k=top_k, batch_size=batch_size):
        if pred.error:
            failed += 1
            typer.echo(f"error: {pred.error}", err=True)
        elif as_json:
            typer.echo(json.dumps({"path": pred.path, "top": pred.top}))
        else:
            rows.append(pred)
    if rows:
        from rich.console import Console
        from rich.table import Table
        table = Table(title=f"{session.path.name} ({session.precision}, {session.provider})")
        table.add_column("image", overflow="fold")
        for i in range(top_k):
            table.add_column(f"#{i + 1}")
        for pred in rows:
            table.add_row(pred.path, *[f"{t['label']} {t['prob']:.1%}" for t in pred.top])
        Console().print(table)
    if failed:
        raise typer.Exit(1)


@app.command("eval")
def evaluate(
    model: List[Path] = typer.Option(..., help="ONNX classifier(s); several give one comparison table."),
    data: Path = typer.Option(..., help="Class-per-folder tree or cifar-10-batches-py folder."),
    split: str = typer.Option("all", help="all | val | train: which part of the fixed split (val = validation)."),
    provider: str = typer.Option("cpu", help="cpu | cuda | tensorrt | openvino (no silent fallback)."),
    precision_hint: Optional[str] = typer.Option(None, "--precision-hint", help="openvino: f32 (default) | bf16, which OpenVINO's CPU plugin would otherwise pick silently."),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout (one object per model)."),
    markdown: Optional[Path] = typer.Option(None, help="Also write the table as markdown to this file."),
):
    """Top-1 accuracy of ONNX classifiers; several models print one table with Δ and agreement vs fp32."""
    import json

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from toolkit.core.data import is_cifar_batches, read_cifar_batches, read_split
    from toolkit.core.infer import compare_to_reference
    from toolkit.core.infer import evaluate as run_eval

    if split not in ("all", "val", "train"):
        fail(f"--split must be all, val or train, not {split!r}")
    sessions = [_open(p, provider, precision_hint) for p in model]
    errors: list[str] = []
    size = sessions[0].input_hw or (32, 32)
    try:
        with Progress(console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task("reading images", total=None)
            if is_cifar_batches(data) and split == "all":
                cifar = Path(data)
                labelled = read_cifar_batches(cifar, "test" if (cifar / "test_batch").is_file() else "train")
            else:
                labelled = read_split(data, split, size, on_error=errors.append,
                                      progress=lambda k: progress.advance(task, k))
            results = []
            for s in sessions:
                task = progress.add_task(f"evaluating {s.path.name}", total=len(labelled))
                results.append(run_eval(s, labelled.images, labelled.labels, labelled.class_names, str(data),
                                        advance=lambda k, t=task: progress.advance(t, k)))
    except (FileNotFoundError, ValueError) as exc:
        fail(_one_line(exc))
    for e in errors:
        typer.echo(f"error: {e}", err=True)
    compare_to_reference(results)
    if as_json:
        for r in results:
            typer.echo(json.dumps(r.to_json() if len(results) > 1 else
                                  {k: v for k, v in r.to_json().items() if k in ("accuracy", "n", "per_class", "model")}))
    else:
        table = Table(title=f"top-1 accuracy on {data} ({split}, {results[0].n:,} images)")
        for col in ("model", "precision", "size (MB)", "accuracy", "Δ vs fp32", "agreement with fp32"):
            table.add_column(col, justify="left" if col == "model" else "right", overflow="fold")
        for r in results:
            table.add_row(Path(r.model).name, r.precision, f"{r.size_mb:.2f}", f"{r.accuracy:.2%}",
                          f"{r.delta_vs_reference * 100:+.2f} pt", f"{r.agreement_with_reference:.2%}")
        Console().print(table)
    if markdown is not None:
        from toolkit.core.infer import accuracy_markdown
        accuracy_markdown(results, f"{data} ({split}, {results[0].n:,} images)", markdown)
        typer.echo(f"wrote {markdown}")
    if errors:
        raise typer.Exit(1)


@app.command()
def generate(
    model: Optional[Path] = typer.Option(None, help="Generator .onnx (default: the shipped models/dcgan.onnx)."),
    n: int = typer.Option(64, min=1, help="How many images."),
    seed: int = typer.Option(0, help="Latent seed: the same seed gives the same picture."),
    out: Optional[Path] = typer.Option(None, help="Grid PNG (default grid.png unless --out-dir is given)."),
    out_dir: Optional[Path] = typer.Option(None, help="Write one PNG per image into this folder instead."),
    provider: str = typer.Option("cpu", help="cpu | cuda | tensorrt | openvino (no silent fallback)."),
    precision_hint: Optional[str] = typer.Option(None, "--precision-hint", help="openvino: f32 (default) | bf16, which OpenVINO's CPU plugin would otherwise pick silently."),
):
    """Generate images with an ONNX generator (DCGAN anime faces by default)."""
    from toolkit import zoo
    from toolkit.core.data import make_grid, save_image
    from toolkit.core.infer import generate as run_generate

    session = _open(model or zoo.DCGAN.onnx_path(), provider, precision_hint)
    try:
        images = run_generate(session, n, seed)
        if out_dir is not None:
            for i, img in enumerate(images):
                save_image(img, out_dir / f"{seed}_{i:04d}.png")
            typer.echo(f"wrote {n} images to {out_dir}")
        if out is not None or out_dir is None:
            path = save_image(make_grid(images), out or Path("grid.png"))
            typer.echo(f"wrote {path} ({n} images, seed {seed})")
    except (ValueError, OSError) as exc:
        fail(_one_line(exc))


@app.command()
def info(model: Path = typer.Argument(..., help="An .onnx file.")):
    """Inputs, outputs, metadata, opset, op-type counts, size (external data included) of an ONNX file."""
    from rich.console import Console

    from toolkit.core.contract import ModelFileError
    from toolkit.core.info import describe_model
    try:
        Console().print(describe_model(model))
    except ModelFileError as exc:
        fail(_one_line(exc))



# ----------------------------------------------------------------------------- bench

@app.command()
def bench(
    model: Optional[List[Path]] = typer.Option(None, help="ONNX model to measure, any ONNX file (repeatable; "
                                                          "default: every shipped classifier precision and the "
                                                          "generator)."),
    provider: Optional[List[str]] = typer.Option(None, help="cpu | cuda | tensorrt | openvino (repeatable; default "
                                                            "cpu). A provider that cannot run here is an error."),
    batch_size: Optional[List[int]] = typer.Option(None, min=1, help="Batch size (repeatable; default 1 and 64): "
                                                                     "fills each input's dynamic first dimension."),
    shape: Optional[List[str]] = typer.Option(None, help="NAME=DIMS, e.g. input=8x3x224x224 (repeatable): the "
                                                         "shape of an input with dynamic dimensions."),
    precision_hint: Optional[List[str]] = typer.Option(None, "--precision-hint", help="openvino rows: f32 | bf16 "
                                                       "(repeatable: one set of rows per hint, int8 files take the "
                                                       "first only; default f32)."),
    threads: int = typer.Option(0, min=0, help="Threads for every runtime alike (0: one per core)."),
    warmup: int = typer.Option(10, min=0, help="Warm-up runs per row, excluded from the statistics."),
    runs: Optional[int] = typer.Option(None, min=1, help="Counted runs per row (default 100)."),
    seconds: Optional[float] = typer.Option(None, min=0.01, help="Measure each row for this long instead of "
                                                                 "--runs (steadier on a noisy machine)."),
    rounds: int = typer.Option(1, min=1, help="Interleave the rows in this many rounds (each round a slice of "
                                              "every row), so load changes hit all rows alike."),
    roof: bool = typer.Option(True, "--roof/--no-roof", help="Measure the roof (issue rates, runtime GEMM) in the "
                                                             "same run and give each row its share."),
    torch: bool = typer.Option(False, "--torch", help="Add PyTorch eager fp32 rows for the same net and batches "
                                                      "(needs the train extra)."),
    data: Optional[Path] = typer.Option(None, help="Class-per-folder tree or CIFAR batches: inputs come from its "
                                                   "validation split and classifier rows get its accuracy."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document instead of the table."),
    out: Optional[Path] = typer.Option(None, help="Also write <machine>.json, .runs.json, .md and .png here."),
    compare: Optional[Path] = typer.Option(None, help="An earlier --json/--out result: print each row's ratio to it."),
    include_copy: bool = typer.Option(False, "--include-copy", help="cuda/tensorrt: time the host↔device copies "
                                                                    "too (default: IO binding, data stays on the GPU)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print node placement, inputs, session times, roof."),
):
    """Latency, throughput, size, accuracy and share of the measured roof per model, precision,
    runtime and batch size. Takes any ONNX file: inputs are synthesised from its declared types."""
    import json

    from rich.console import Console

    from toolkit.core import bench as bench_lib
    from toolkit.core.openvino import PRECISION_HINTS
    from toolkit.core.sessions import ModelError, ProviderError

    if runs is not None and seconds is not None:
        fail("--runs and --seconds are exclusive; give one")
    for hint in precision_hint or []:
        if hint not in PRECISION_HINTS:
            fail(f"--precision-hint {hint!r}: choose from {', '.join(PRECISION_HINTS)}")
    if precision_hint and "openvino" not in (provider or []):
        fail("--precision-hint applies to --provider openvino only")
    torch_rows = None
    if torch:
        try:
            from toolkit.build.torch_bench import torch_rows
        except ImportError:
            fail("--torch needs PyTorch: pip install 'toolkit[train]'")
    # markup off: paths and shapes such as [N, 32, 32, 3] are text, not rich tags.
    status = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)

    def on_row(row: dict) -> None:
        hint = f" ({row['compute']})" if row.get("compute") else ""
        status.print(f"  {row['model']} {row['precision']}{hint} {row['provider']} {row['backend']} batch "
                     f"{row['batch_size']}: p50 {row['p50_ms']:.3f} ms, {row['throughput']:,.0f} img/s")

    try:
        old = bench_lib.load_result(compare) if compare else None
        cfg = bench_lib.BenchConfig(
            models=list(model) if model else bench_lib.default_models(), providers=list(provider or ["cpu"]),
            batch_sizes=list(batch_size or bench_lib.DEFAULT_BATCH_SIZES), threads=threads or None,
            warmup=warmup, runs=runs, seconds=seconds, data=data, include_copy=include_copy,
            shapes=bench_lib.parse_shapes(list(shape or [])), precision_hints=list(precision_hint or ["f32"]),
            rounds=rounds, roof=roof, torch_rows=torch_rows)
        doc = bench_lib.run_benchmark(cfg, on_row=on_row, log=status.print if verbose else None)
        written = bench_lib.write_reports(doc, out) if out else []
    except (bench_lib.BenchError, ProviderError, ModelError, OSError) as exc:
        fail(_one_line(exc))
    comparison = bench_lib.compare_rows(doc, old) if old else None
    if json_output:
        typer.echo(json.dumps({**doc, "compare": comparison} if comparison else doc))
    else:
        # Piped output has no terminal width; rich would assume 80 columns and squash the 16 columns.
        console = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 200)
        bench_lib.print_table(doc, console)
        if verbose:
            for line in bench_lib.placement_lines(doc):
                console.print(f"placement: {line}")
        if comparison:
            bench_lib.print_comparison(comparison, old, console)
    for path in written:
        status.print(f"wrote {path}")


# ----------------------------------------------------------------------------- transform

@app.command()
def transform(
    inputs: List[Path] = typer.Argument(..., help="Image files or folders (searched recursively); any size."),
    op: str = typer.Option(..., help="fft-lowpass | fft-spectrum | walsh-compress."),
    radius: Optional[float] = typer.Option(None, help="fft-lowpass: cut-off in (0, 1], as a fraction of the "
                                                      "Nyquist frequency (default 0.5)."),
    keep: Optional[float] = typer.Option(None, help="walsh-compress: fraction of sequencies kept per side, in "
                                                    "(0, 1] (default 0.5)."),
    form: Optional[str] = typer.Option(None, help="dft | matmul (default: dft on cpu for the Fourier ops, "
                                                  "else matmul; walsh-compress is matmul only)."),
    out: Path = typer.Option(..., help="Output image file (one input) or folder (<stem>.png per image)."),
    compare: bool = typer.Option(False, "--compare", help="Also write <out>.compare.png: before | after."),
    provider: str = typer.Option("cpu", help="cpu | cuda | tensorrt | openvino (no silent fallback)."),
):
    """Filter or transform images in the frequency domain (Fourier or Walsh–Hadamard) with ONNX."""
    from toolkit.core.fsio import shown
    from toolkit.core.sessions import ModelError, ProviderError
    from toolkit.core.transforms import OPS, TransformError, run_transform

    if op not in OPS:
        fail(f"unknown op {op!r} (choose from {', '.join(OPS)})")
    given = {"radius": radius, "keep": keep}
    name = OPS[op]
    for option, value in given.items():
        if value is not None and option != name:
            fail(f"--{option} does not apply to {op}")
    params = {name: 0.5 if given[name] is None else given[name]} if name else {}

    def on_written(written) -> None:
        extra = f" (and {shown(written.compare)})" if written.compare else ""
        typer.echo(f"{shown(written.source)} → {shown(written.output)}{extra}")

    try:
        failed = run_transform(inputs, op, params, out, form=form, compare=compare, provider=provider,
                               on_written=on_written, on_error=lambda message: typer.echo(f"error: {message}", err=True))
    except (TransformError, ProviderError, ModelError) as exc:
        fail(_one_line(exc))
    if failed:
        raise typer.Exit(1)


