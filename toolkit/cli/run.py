"""Runtime commands (onnxruntime only): infer, eval, generate, info, bench, transform."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from toolkit.cli.common import (
    _one_line,
    _open,
    app,
    check_batch_sizes,
    check_output_dir,
    check_output_file,
    each_of,
    fail,
    metavar,
    report,
    table_console,
)
from toolkit.edge.options import PRECISION_HINTS, PROVIDERS, Form, Op, PrecisionHint, Provider, Split

# ----------------------------------------------------------------------------- infer / eval / generate / info
# Each input is handled on its own: a bad one is one `error:` line, the others go on, and the exit
# status is 1 if any failed. Inputs are plain Paths that the commands check themselves (no Typer
# `exists=`/`readable=`), so one unreadable file cannot make the parser reject the whole call.
# Every option is checked before any work (model opened, image read, file written).

@app.command()
def infer(
    inputs: list[Path] = typer.Argument(..., help="Image files or folders (searched recursively)."),
    model: Path | None = typer.Option(None, help="Classifier .onnx (default: the shipped models/cifar_cnn.onnx)."),
    top_k: int = typer.Option(3, "--top-k", min=1, help="How many labels to show per image (at most the "
                                                        "model's number of labels)."),
    provider: Provider = typer.Option("cpu", help="Where to run; no silent fallback to another provider."),
    precision_hint: PrecisionHint | None = typer.Option(None, "--precision-hint", help="openvino: compute "
                                                           "precision of float models (default f32), which "
                                                           "OpenVINO's CPU plugin would otherwise pick silently."),
    batch_size: int = typer.Option(64, min=1, help="Images per onnxruntime call (at most 4,096)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per image on stdout."),
):
    """Classify images of any size with an ONNX classifier."""
    import json

    import toolkit.zoo as zoo
    from toolkit.edge.data.fsio import shown
    from toolkit.edge.data.images import expand_inputs
    from toolkit.edge.infer import classify_files, require_task
    from toolkit.edge.runtime.ort import ModelError

    check_batch_sizes(batch_size)
    session = _open(model or zoo.CIFAR_CNN.onnx_path(), provider, precision_hint)
    try:
        require_task(session, "classify")
    except ModelError as exc:
        fail(_one_line(exc))
    failed = 0

    def bad(message: str) -> None:
        nonlocal failed
        failed += 1
        report(message)

    files = expand_inputs(inputs, on_error=bad)
    if not files and not failed:
        fail("no images found in the given paths")
    rows = []
    for pred in classify_files(session, files, k=top_k, batch_size=batch_size):
        if pred.error:
            bad(pred.error)
        elif as_json:
            typer.echo(json.dumps({"path": pred.path, "top": pred.top}))
        else:
            rows.append(pred)
    if rows:
        from rich.table import Table
        table = Table(title=f"{shown(session.path.name)} ({session.precision}, {session.provider})")
        table.add_column("image", overflow="fold")
        for i in range(max(len(pred.top) for pred in rows)):
            table.add_column(f"#{i + 1}")
        for pred in rows:
            table.add_row(shown(pred.path), *[f"{t['label']} {t['prob']:.1%}" for t in pred.top])
        table_console().print(table)
    if failed:
        raise typer.Exit(1)


@app.command("eval")
def evaluate(
    model: list[Path] = typer.Option(..., help="ONNX classifier(s); several give one comparison table."),
    data: Path = typer.Option(..., help="Class-per-folder tree or cifar-10-batches-py folder."),
    split: Split = typer.Option("all", help="Which part of the fixed split (val = validation)."),
    provider: Provider = typer.Option("cpu", help="Where to run; no silent fallback to another provider."),
    precision_hint: PrecisionHint | None = typer.Option(None, "--precision-hint", help="openvino: compute "
                                                           "precision of float models (default f32), which "
                                                           "OpenVINO's CPU plugin would otherwise pick silently."),
    batch_size: int = typer.Option(256, min=1, help="Images decoded and run at a time (at most 4,096): memory "
                                                    "follows this, not the data set."),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout (one object per model)."),
    markdown: Path | None = typer.Option(None, help="Also write the table as markdown to this file."),
):
    """Top-1 accuracy of ONNX classifiers; several models print one table with Δ and agreement vs fp32."""
    import json

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from toolkit.edge.data.datasets import is_cifar_batches, list_split
    from toolkit.edge.data.fsio import shown
    from toolkit.edge.infer import accuracy_markdown, compare_to_reference, evaluate_stream
    from toolkit.edge.runtime.ort import ModelError, ProviderError, open_model

    check_batch_sizes(batch_size)
    check_output_file(markdown, "--markdown")
    if not data.is_dir():
        fail(f"--data {shown(data)}: not a folder")
    part = "test" if split == "all" and is_cifar_batches(data) and (data / "test_batch").is_file() else split
    try:
        listing = list_split(data, part)
    except (FileNotFoundError, ValueError) as exc:
        fail(_one_line(exc))
    if not len(listing):
        fail(f"--data {shown(data)}: no images in the {split} part")
    failed = 0

    def bad(message: str) -> None:
        nonlocal failed
        failed += 1
        report(message)

    sessions = []
    for path in model:        # one model that cannot be opened is one error; the others are evaluated
        try:
            sessions.append(open_model(path, provider, precision_hint=precision_hint))
        except ModelError as exc:
            bad(_one_line(exc))
        except ProviderError as exc:       # the provider is the whole call's, not one model's
            fail(_one_line(exc))
    stderr = Console(stderr=True)
    with Progress(console=stderr, transient=True, disable=not stderr.is_terminal) as progress:
        task = progress.add_task(f"evaluating {len(sessions)} models", total=len(listing))
        results = evaluate_stream(sessions, listing, shown(data), bad, batch_size,
                                  progress=lambda k: progress.advance(task, k)) if sessions else []
    if not results:
        fail("no model could be evaluated" if sessions or not failed else "no model could be opened")
    compare_to_reference(results)
    title = f"{shown(data)} ({split}, {results[0].n:,} images)"
    if as_json:
        for r in results:
            brief = ("accuracy", "n", "per_class", "model")
            typer.echo(json.dumps(r.to_json() if len(results) > 1 else
                                  {k: v for k, v in r.to_json().items() if k in brief}))
    else:
        table = Table(title=f"top-1 accuracy on {title}")
        for col in ("model", "precision", "size (MB)", "accuracy", "Δ vs fp32", "agreement with fp32"):
            table.add_column(col, justify="left" if col == "model" else "right", overflow="fold")
        for r in results:
            table.add_row(shown(Path(r.model).name), r.precision, f"{r.size_mb:.2f}", f"{r.accuracy:.2%}",
                          f"{(r.delta_vs_reference or 0) * 100:+.2f} pt", f"{r.agreement_with_reference or 0:.2%}")
        table_console().print(table)
    if markdown is not None:
        try:
            accuracy_markdown(results, title, markdown)
        except OSError as exc:
            fail(f"--markdown {shown(markdown)}: {exc.strerror or exc}")
        typer.echo(f"wrote {shown(markdown)}")
    if failed:
        raise typer.Exit(1)


@app.command()
def generate(
    model: Path | None = typer.Option(None, help="Generator .onnx (default: the shipped models/dcgan.onnx)."),
    n: int = typer.Option(64, min=1, help="How many images (a grid holds at most 1,024; --out-dir up to 100,000)."),
    seed: int = typer.Option(0, help="Latent seed: the same seed gives the same picture."),
    out: Path | None = typer.Option(None, help="Grid PNG (default grid.png unless --out-dir is given)."),
    out_dir: Path | None = typer.Option(None, help="Write one PNG per image into this folder instead."),
    provider: Provider = typer.Option("cpu", help="Where to run; no silent fallback to another provider."),
    precision_hint: PrecisionHint | None = typer.Option(None, "--precision-hint", help="openvino: compute "
                                                           "precision of float models (default f32), which "
                                                           "OpenVINO's CPU plugin would otherwise pick silently."),
):
    """Generate images with an ONNX generator (DCGAN anime faces by default)."""
    import toolkit.zoo as zoo
    from toolkit.edge.data.fsio import shown
    from toolkit.edge.data.images import empty_grid, grid_columns, place, save_image
    from toolkit.edge.infer import MAX_GENERATE, MAX_GRID, generate_batches

    grid_path = out if out is not None else (Path("grid.png") if out_dir is None else None)
    if n > MAX_GENERATE:
        fail(f"--n {n:,} is over the limit of {MAX_GENERATE:,} images per call")
    if grid_path is not None and n > MAX_GRID:
        fail(f"--n {n:,}: a grid picture holds at most {MAX_GRID:,} images; write them one by one with "
             f"--out-dir (up to {MAX_GENERATE:,}) and no --out")
    check_output_file(grid_path, "--out")
    check_output_dir(out_dir, "--out-dir")
    session = _open(model or zoo.DCGAN.onnx_path(), provider, precision_hint)
    grid = None
    try:   # images are written (or placed in the grid) as each batch comes: memory is one batch
        i = 0
        for batch in generate_batches(session, n, seed):
            for image in batch:
                if out_dir is not None:
                    save_image(image, out_dir / f"{seed}_{i:04d}.png")
                if grid_path is not None:
                    grid = empty_grid(n, image.shape) if grid is None else grid
                    place(grid, i, image, grid_columns(n))
                i += 1
        if out_dir is not None:
            typer.echo(f"wrote {n} images to {shown(out_dir)}")
        if grid_path is not None and grid is not None:
            typer.echo(f"wrote {shown(save_image(grid, grid_path))} ({n} images, seed {seed})")
    except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own types; a full disk raises OSError)
        fail(_one_line(exc))


@app.command()
def info(model: Path = typer.Argument(..., help="An .onnx file.")):
    """Inputs, outputs, metadata, opset, op-type counts, size (external data included) of an ONNX file."""

    from toolkit.edge.contract import ModelFileError
    from toolkit.edge.info import describe_model
    try:
        # markup off: metadata and names are the file's text, never rich markup.
        table_console().print(describe_model(model))
    except ModelFileError as exc:
        fail(_one_line(exc))


# ----------------------------------------------------------------------------- bench

@app.command()
def bench(
    model: list[Path] | None = typer.Option(None, help="ONNX model to measure, any ONNX file (repeatable; "
                                                          "default: every shipped classifier precision and the "
                                                          "generator)."),
    provider: list[str] | None = typer.Option(None, metavar=metavar(PROVIDERS), callback=each_of(PROVIDERS),
                                                 help="Repeatable; default cpu. A provider that cannot run here "
                                                      "is an error."),
    batch_size: list[int] | None = typer.Option(None, min=1, help="Batch size (repeatable; default 1 and 64): "
                                                                     "fills each input's dynamic first dimension."),
    shape: list[str] | None = typer.Option(None, help="NAME=DIMS, e.g. input=8x3x224x224 (repeatable): the "
                                                         "shape of an input with dynamic dimensions."),
    precision_hint: list[str] | None = typer.Option(None, "--precision-hint", metavar=metavar(PRECISION_HINTS),
                                                       callback=each_of(PRECISION_HINTS), help="openvino rows: "
                                                       "repeatable, one set of rows per hint, int8 files take the "
                                                       "first only; default f32."),
    threads: int = typer.Option(0, min=0, help="Threads for every runtime alike (0: one per core)."),
    schedule: list[str] | None = typer.Option(None, metavar="STREAMS[xMICRO]", help="cpu/openvino rows: "
                                              "repeatable, one set of rows per schedule, e.g. 2x32 = the batch cut "
                                              "into micro-batches of 32 run on 2 streams (threads shared out); "
                                              "default 1 (one call per batch)."),
    warmup: int = typer.Option(10, min=0, help="Warm-up runs per row, excluded from the statistics."),
    runs: int | None = typer.Option(None, min=1, help="Counted runs per row (default 100)."),
    seconds: float | None = typer.Option(None, min=0.01, help="Measure each row for this long instead of "
                                                                 "--runs (steadier on a noisy machine)."),
    rounds: int = typer.Option(1, min=1, help="Interleave the rows in this many rounds (each round a slice of "
                                              "every row), so load changes hit all rows alike."),
    roof: bool = typer.Option(True, "--roof/--no-roof", help="Measure the roof (issue rates, runtime GEMM) in the "
                                                             "same run and give each row its share."),
    torch: bool = typer.Option(False, "--torch", help="Add PyTorch eager fp32 rows for the same net and batches "
                                                      "(needs the train extra)."),
    data: Path | None = typer.Option(None, help="Class-per-folder tree or CIFAR batches: inputs come from its "
                                                   "validation split and classifier rows get its accuracy."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document instead of the table."),
    out: Path | None = typer.Option(None, help="Also write <machine>.json, .runs.json, .md and .png here."),
    compare: Path | None = typer.Option(None, help="An earlier --json/--out result: print each row's ratio to it."),
    include_copy: bool = typer.Option(False, "--include-copy", help="cuda/tensorrt: time the host↔device "
                                                                    "copies too (default: IO binding, data stays on "
                                                                    "the GPU)."),
    strict_placement: bool = typer.Option(False, "--strict-placement", help="Refuse a row whose compute nodes "
                                          "(Conv, Gemm, MatMul, …) do not all run on its provider (default: mark it)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print node placement, inputs, session times, roof."),
):
    """Latency, throughput, size, accuracy and share of the measured roof per model, precision,
    runtime and batch size. Takes any ONNX file: inputs are synthesised from its declared types."""
    import json

    from rich.console import Console

    from toolkit.edge import bench as bench_lib
    from toolkit.edge.runtime.ort import ModelError, ProviderError

    if runs is not None and seconds is not None:
        fail("--runs and --seconds are exclusive; give one")
    check_batch_sizes(batch_size)
    check_output_dir(out, "--out")
    if data is not None:       # the data set is the whole call's: checked here, not as each model's failure
        from toolkit.edge.data.datasets import list_split
        from toolkit.edge.data.fsio import shown
        try:
            list_split(data, "val")
        except (FileNotFoundError, ValueError) as exc:
            fail(f"--data {shown(data)}: {_one_line(exc)}")
    if precision_hint and "openvino" not in (provider or []):
        fail("--precision-hint applies to --provider openvino only")
    from toolkit.edge.runtime.streams import Schedule
    try:
        schedules = list(dict.fromkeys(Schedule.parse(text) for text in schedule or ["1"]))
    except ValueError as exc:
        fail(f"--schedule: {exc}")
    if any(not s.plain for s in schedules) and not {"cpu", "openvino"} & set(provider or ["cpu"]):
        fail("--schedule applies to the cpu and openvino providers")
    torch_rows: Callable[..., Any] | None = None
    if torch:
        try:
            from toolkit.pytorch.torch_bench import torch_rows
        except ImportError:
            fail("--torch needs PyTorch: pip install 'toolkit[train]'")
    # markup off: paths and shapes such as [N, 32, 32, 3] are text, not rich tags.
    status = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)

    def on_row(row: dict) -> None:
        hint = f" ({row['compute']})" if row.get("compute") else ""
        hint += f", {row['schedule']}" if row.get("schedule") else ""
        status.print(f"  {row['model']} {row['precision']}{hint} {row['provider']} {row['backend']} batch "
                     f"{row['batch_size']}: p50 {row['p50_ms']:.3f} ms, {row['throughput']:,.0f} img/s")

    try:
        old = bench_lib.load_result(compare) if compare else None
        cfg = bench_lib.BenchConfig(
            models=list(model) if model else bench_lib.default_models(), providers=list(provider or ["cpu"]),
            batch_sizes=list(batch_size or bench_lib.DEFAULT_BATCH_SIZES), threads=threads or None,
            warmup=warmup, runs=runs, seconds=seconds, data=data, include_copy=include_copy,
            shapes=bench_lib.parse_shapes(list(shape or [])), precision_hints=list(precision_hint or ["f32"]),
            rounds=rounds, roof=roof, torch_rows=torch_rows, strict_placement=strict_placement, schedules=schedules)
        doc = bench_lib.run_benchmark(cfg, on_row=on_row, log=status.print if verbose else None, on_error=report)
        written = bench_lib.write_reports(doc, out) if out else []
    except (bench_lib.BenchError, ProviderError, ModelError, OSError) as exc:
        fail(_one_line(exc))
    comparison = bench_lib.compare_rows(doc, old) if old else None
    if json_output:
        typer.echo(json.dumps({**doc, "compare": comparison} if comparison else doc))
    else:
        # Piped output has no terminal width; rich would assume 80 columns and squash the 16 columns.
        console = table_console()
        bench_lib.print_table(doc, console)
        if verbose:
            for line in bench_lib.placement_lines(doc):
                console.print(f"placement: {line}")
        if comparison and old:
            bench_lib.print_comparison(comparison, old, console)
    for path in written:
        status.print(f"wrote {path}")
    if doc.get("errors"):        # some models could not be measured; each said why in one line
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- transform

@app.command()
def transform(
    inputs: list[Path] = typer.Argument(..., help="Image files or folders (searched recursively); any size."),
    op: Op = typer.Option(..., help="The transform (GUIDE §1 defines each)."),
    radius: float | None = typer.Option(None, help="fft-lowpass: cut-off in (0, 1], as a fraction of the "
                                                      "Nyquist frequency (default 0.5)."),
    keep: float | None = typer.Option(None, help="walsh-compress: fraction of sequencies kept per side, in "
                                                    "(0, 1] (default 0.5)."),
    form: Form | None = typer.Option(None, help="Default: dft on cpu for the Fourier ops, else matmul; "
                                                   "walsh-compress is matmul only."),
    out: Path = typer.Option(..., help="Output image file (one input) or folder (<stem>.png per image)."),
    compare: bool = typer.Option(False, "--compare", help="Also write <out>.compare.png: before | after."),
    provider: Provider = typer.Option("cpu", help="Where to run; no silent fallback to another provider."),
):
    """Filter or transform images in the frequency domain (Fourier or Walsh–Hadamard) with ONNX."""
    from toolkit.edge.data.fsio import shown
    from toolkit.edge.runtime.ort import ModelError, ProviderError
    from toolkit.edge.spectral.transforms import OPS, TransformError, run_transform

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
                               on_written=on_written,
                               on_error=lambda message: typer.echo(f"error: {message}", err=True))
    except (TransformError, ProviderError, ModelError) as exc:
        fail(_one_line(exc))
    if failed:
        raise typer.Exit(1)


