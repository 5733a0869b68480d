"""Runtime commands: infer, eval, generate, info, transform (bench lives in bench.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from toolkit.cli.common import (
    DEPLOYED_HELP,
    _open,
    app,
    check_batch_sizes,
    check_output_dir,
    check_output_file,
    fail,
    provider_option,
    report,
    say,
    table_console,
)
from toolkit.cli.scale import (
    ADDRESS_HELP,
    ENGINE_HELP,
    THREADS_HELP,
    WORKERS_HELP,
    check_engine,
    ray_evaluations,
    ray_infer,
    ray_options,
)
from toolkit.edge.errors import first_line
from toolkit.edge.options import Engine, Form, Op, PrecisionHint, Provider, ResultFormat, Split

# ----------------------------------------------------------------------------- infer / eval / generate / info
# Each input is handled on its own: a bad one is one `error:` line, the others go on, and the exit
# status is 1 if any failed. Inputs are plain Paths that the commands check themselves (Typer's
# `readable=` check, on by default, is turned off), so one unreadable file cannot make the parser
# reject the whole call.
# Every option is checked before any work (model opened, image read, file written).

@app.command()
def infer(
    # str, not Path: a URI's `//` must reach the Ray engine as written.
    inputs: list[str] = typer.Argument(..., help="Image files or folders (searched recursively); --engine ray "
                                                 "also takes globs, @FILE (a path per line) and URIs."),
    model: Path | None = typer.Option(None, help="Classifier .onnx (default: the strongest shipped one, "
                                      "models/cifar_resnet.tta.onnx)."),
    top_k: int = typer.Option(3, "--top-k", min=1, help="How many labels to show per image (at most the "
                                                        "model's number of labels)."),
    provider: Provider | None = typer.Option(None, help=DEPLOYED_HELP),
    precision_hint: PrecisionHint | None = typer.Option(None, "--precision-hint", help="openvino: compute "
                                                           "precision of float models (default f32), which "
                                                           "OpenVINO's CPU plugin would otherwise pick silently."),
    batch_size: int = typer.Option(64, min=1, help="Images per onnxruntime call (at most 4,096)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per image on stdout."),
    engine: Engine = typer.Option("local", help=ENGINE_HELP),
    out: Path | None = typer.Option(None, help="ray: the results folder (one row per image, in shards; a rerun "
                                                "skips the images it holds)."),
    result_format: ResultFormat | None = typer.Option(None, "--format", help="ray: parquet (default) or jsonl "
                                                                           "shards."),
    address: str | None = typer.Option(None, help=ADDRESS_HELP),
    workers: int | None = typer.Option(None, min=1, help=WORKERS_HELP),
    threads: int | None = typer.Option(None, min=1, help=THREADS_HELP),
):
    """Classify images of any size with an ONNX classifier; --engine ray classifies on a Ray cluster into --out."""
    import json

    import toolkit.zoo as zoo
    from toolkit.edge.data.images import expand_inputs
    from toolkit.edge.errors import shown
    from toolkit.edge.infer import classify_files, require_task
    from toolkit.edge.runtime import ModelError

    check_batch_sizes(batch_size)
    check_engine(engine, address=address, workers=workers, threads=threads, out=out, fmt=result_format,
                 as_json=as_json, needs_out=True)
    if engine == "ray" and out is not None:
        ray_infer(inputs, model or zoo.default_classifier(), top_k, provider, precision_hint, out,
                  result_format or "parquet", ray_options(address, workers, threads, batch_size))
        return
    session = _open(model or zoo.default_classifier(), provider, precision_hint)
    try:
        require_task(session, "classify")
    except ModelError as exc:
        fail(first_line(exc))
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
    model: list[Path] | None = typer.Option(None, readable=False, help="ONNX classifier(s); several give one "
                                            "comparison table (default: the strongest shipped one, "
                                            "models/cifar_resnet.tta.onnx)."),
    data: Path = typer.Option(..., help="Class-per-folder tree or cifar-10-batches-py folder."),
    split: Split = typer.Option("all", help="Which part of the fixed split (val = validation)."),
    provider: Provider = provider_option(),
    precision_hint: PrecisionHint | None = typer.Option(None, "--precision-hint", help="openvino: compute "
                                                           "precision of float models (default f32), which "
                                                           "OpenVINO's CPU plugin would otherwise pick silently."),
    batch_size: int = typer.Option(256, min=1, help="Images decoded and run at a time (at most 4,096): memory "
                                                    "follows this, not the data set."),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout (one object per model)."),
    markdown: Path | None = typer.Option(None, help="Also write the table as markdown to this file."),
    engine: Engine = typer.Option("local", help=ENGINE_HELP),
    address: str | None = typer.Option(None, help=ADDRESS_HELP),
    workers: int | None = typer.Option(None, min=1, help=WORKERS_HELP),
    threads: int | None = typer.Option(None, min=1, help=THREADS_HELP),
):
    """Top-1 accuracy of ONNX classifiers; several models print one table with Δ and agreement vs fp32."""
    import toolkit.zoo as zoo
    from toolkit.edge.errors import shown
    from toolkit.edge.infer import accuracy_markdown, compare_to_reference, eval_split

    check_batch_sizes(batch_size)
    check_output_file(markdown, "--markdown")
    check_engine(engine, address=address, workers=workers, threads=threads)
    try:
        listing = eval_split(data, split, log=say)
    except ValueError as exc:
        fail(f"--data {first_line(exc)}")
    failed = 0

    def bad(message: str) -> None:
        nonlocal failed
        failed += 1
        report(message)

    models = model or [zoo.default_classifier()]
    if engine == "ray":
        results = ray_evaluations(models, listing, data, provider, precision_hint,
                                  ray_options(address, workers, threads, batch_size), bad)
        opened = True
    else:
        results, opened = _local_evaluations(models, listing, data, provider, precision_hint, batch_size, bad)
    if not results:
        fail("no model could be evaluated" if opened or not failed else "no model could be opened")
    compare_to_reference(results)
    title = f"{shown(data)} ({split}, {results[0].n:,} images)"
    _print_evaluations(results, title, as_json)
    if markdown is not None:
        try:
            accuracy_markdown(results, title, markdown)
        except OSError as exc:
            fail(f"--markdown {shown(markdown)}: {exc.strerror or exc}")
        typer.echo(f"wrote {shown(markdown)}")
    if failed:
        raise typer.Exit(1)


def _local_evaluations(models: list[Path], listing, data: Path, provider: str, precision_hint: str | None,
                       batch_size: int, bad) -> tuple[list, bool]:
    """The local engine's evaluations, with a progress bar; and whether any model could be opened."""
    from rich.console import Console
    from rich.progress import Progress

    from toolkit.edge.errors import shown
    from toolkit.edge.infer import evaluate_stream
    from toolkit.edge.runtime import ModelError, ProviderError, open_model

    sessions = []
    for path in models:        # one model that cannot be opened is one error; the others are evaluated
        try:
            sessions.append(open_model(path, provider, precision_hint=precision_hint))
        except ModelError as exc:
            bad(first_line(exc))
        except ProviderError as exc:       # the provider is the whole call's, not one model's
            fail(first_line(exc))
    stderr = Console(stderr=True)
    with Progress(console=stderr, transient=True, disable=not stderr.is_terminal) as progress:
        task = progress.add_task(f"evaluating {len(sessions)} models", total=len(listing))
        results = evaluate_stream(sessions, listing, shown(data), bad, batch_size,
                                  progress=lambda k: progress.advance(task, k)) if sessions else []
    return results, bool(sessions)


def _print_evaluations(results: list, title: str, as_json: bool) -> None:
    """One JSON object per model (the brief form for a single model), or the comparison table."""
    import json

    from rich.table import Table

    from toolkit.edge.infer import row_labels

    if as_json:
        for r in results:
            brief = ("accuracy", "n", "per_class", "model")
            typer.echo(json.dumps(r.to_json() if len(results) > 1 else
                                  {k: v for k, v in r.to_json().items() if k in brief}))
        return
    table = Table(title=f"top-1 accuracy on {title}")
    for col in ("model", "precision", "size (MB)", "accuracy", "Δ vs fp32", "agreement with fp32"):
        table.add_column(col, justify="left" if col == "model" else "right", overflow="fold")
    for label, r in zip(row_labels(results), results):
        table.add_row(label, r.precision, f"{r.size_mb:.2f}", f"{r.accuracy:.2%}",
                      f"{(r.delta_vs_reference or 0) * 100:+.2f} pt", f"{r.agreement_with_reference or 0:.2%}")
    table_console().print(table)


@app.command()
def generate(
    model: Path | None = typer.Option(None, help="Generator .onnx (default: the shipped models/dcgan.onnx)."),
    n: int = typer.Option(64, min=1, help="How many images (a grid holds at most 1,024; --out-dir up to 100,000)."),
    seed: int = typer.Option(0, help="Latent seed: the same seed gives the same picture."),
    out: Path | None = typer.Option(None, help="Grid PNG (default grid.png unless --out-dir is given)."),
    out_dir: Path | None = typer.Option(None, help="Write one PNG per image into this folder instead."),
    provider: Provider = provider_option(),
    precision_hint: PrecisionHint | None = typer.Option(None, "--precision-hint", help="openvino: compute "
                                                           "precision of float models (default f32), which "
                                                           "OpenVINO's CPU plugin would otherwise pick silently."),
):
    """Generate images with an ONNX generator (DCGAN anime faces by default)."""
    import toolkit.zoo as zoo
    from toolkit.edge.data.images import empty_grid, grid_columns, place, save_image
    from toolkit.edge.errors import shown
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
        fail(first_line(exc))


@app.command()
def info(model: Path = typer.Argument(..., help="An .onnx file.")):
    """Inputs, outputs, metadata, opset, op-type counts, size (external data included) of an ONNX file."""

    from toolkit.edge.contract import ModelFileError
    from toolkit.edge.info import describe_model
    try:
        # markup off: metadata and names are the file's text, never rich markup.
        table_console().print(describe_model(model))
    except ModelFileError as exc:
        fail(first_line(exc))


# ----------------------------------------------------------------------------- transform

@app.command()
def transform(
    inputs: list[Path] = typer.Argument(..., readable=False, help="Image files or folders (searched "
                                                                   "recursively); any size."),
    op: Op = typer.Option(..., help="The transform (docs/transforms.md defines each)."),
    radius: float | None = typer.Option(None, help="fft-lowpass: cut-off in (0, 1], as a fraction of the "
                                                      "Nyquist frequency (default 0.5)."),
    keep: float | None = typer.Option(None, help="walsh-compress: fraction of sequencies kept per side, in "
                                                    "(0, 1] (default 0.5)."),
    form: Form | None = typer.Option(None, help="Default: dft on cpu for the Fourier ops, else matmul; "
                                                   "walsh-compress is matmul only."),
    out: Path = typer.Option(..., help="Output image file (one input) or folder (<stem>.png per image)."),
    compare: bool = typer.Option(False, "--compare", help="Also write <out>.compare.png: before | after."),
    provider: Provider = provider_option(),
):
    """Filter or transform images in the frequency domain (Fourier or Walsh–Hadamard) with ONNX."""
    from toolkit.edge.errors import shown
    from toolkit.edge.runtime import ModelError, ProviderError
    from toolkit.edge.spectral.transforms import OP_PARAMETER, TransformError, run_transform

    given = {"radius": radius, "keep": keep}
    name = OP_PARAMETER[op]
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
        fail(first_line(exc))
    if failed:
        raise typer.Exit(1)


