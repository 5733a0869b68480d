"""The `bench` command: latency, throughput and the measured roof (toolkit.edge.bench does the work)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from toolkit.cli.common import app, check_batch_sizes, check_output_dir, each_of, fail, metavar, report, table_console
from toolkit.edge.errors import first_line
from toolkit.edge.options import PRECISION_HINTS, PROVIDERS


@app.command()
def bench(
    model: list[Path] | None = typer.Option(None, readable=False, help="ONNX model to measure, any ONNX file "
                                                                          "(repeatable; default: every shipped "
                                                                          "classifier precision and the "
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
    from rich.console import Console

    from toolkit.edge import bench as bench_lib
    from toolkit.edge.runtime import ModelError, ProviderError

    if runs is not None and seconds is not None:
        fail("--runs and --seconds are exclusive; give one")
    check_batch_sizes(batch_size)
    check_output_dir(out, "--out")
    _check_data(data)
    provider, threads, schedule, precision_hint, batch_size = _deployed(model, provider, threads, schedule,
                                                                        precision_hint, batch_size)
    schedules = _schedules(provider, precision_hint, schedule)
    torch_rows: Callable[..., Any] | None = None
    if torch:
        try:
            from toolkit.pytorch.torch_bench import torch_rows
        except ImportError:
            fail("--torch needs PyTorch: pip install 'toolkit[train]'")
    # markup off: paths and shapes such as [N, 32, 32, 3] are text, not rich tags.
    status = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)
    try:
        old = bench_lib.load_result(compare) if compare else None
        cfg = bench_lib.BenchConfig(
            models=list(model) if model else bench_lib.default_models(), providers=list(provider or ["cpu"]),
            batch_sizes=list(batch_size or bench_lib.DEFAULT_BATCH_SIZES), threads=threads or None,
            warmup=warmup, runs=runs, seconds=seconds, data=data, include_copy=include_copy,
            shapes=bench_lib.parse_shapes(list(shape or [])), precision_hints=list(precision_hint or ["f32"]),
            rounds=rounds, roof=roof, torch_rows=torch_rows, strict_placement=strict_placement, schedules=schedules)
        doc = bench_lib.run_benchmark(cfg, on_row=lambda row: status.print(_row_line(row)),
                                      log=status.print if verbose else None, on_error=report)
        written = bench_lib.write_reports(doc, out) if out else []
    except (bench_lib.BenchError, ProviderError, ModelError, OSError) as exc:
        fail(first_line(exc))
    _print_document(doc, old, json_output, verbose)
    for path in written:
        status.print(f"wrote {path}")
    if doc.get("errors"):        # some models could not be measured; each said why in one line
        raise typer.Exit(1)


def _deployed(models: list[Path] | None, provider: list[str] | None, threads: int, schedule: list[str] | None,
              hints: list[str] | None, batch_sizes: list[int] | None) -> tuple:
    """The settings `toolkit optimize` wrote into the models' metadata (`toolkit.deployment`), for
    every option not given, when all the given models carry the same deployment; an explicit
    --provider other than the deployment's keeps the plain defaults for the rest."""
    from toolkit.edge.contract import ModelFileError, inspect_model
    from toolkit.edge.runtime.deployment import DeploymentError, deployment_of

    found = set()
    for path in models or []:
        try:
            found.add(deployment_of(inspect_model(path).metadata, str(path)))
        except (ModelFileError, DeploymentError, OSError):
            found.add(None)        # the model's own error is reported when it is measured
    if len(found) != 1 or None in found:
        return provider, threads, schedule, hints, batch_sizes
    placed = found.pop()
    assert placed is not None
    if provider and provider != [placed.provider]:
        return provider, threads, schedule, hints, batch_sizes
    typer.echo(f"note: settings from the model's deployment metadata: {placed.describe()}, batch "
               f"{placed.batch_size} (options given explicitly win)", err=True)
    return ([placed.provider], threads or placed.threads or 0, schedule or [placed.schedule],
            hints or ([placed.precision_hint] if placed.precision_hint else None), batch_sizes or [placed.batch_size])


def _check_data(data: Path | None) -> None:
    """The data set is the whole call's: checked before any model, not as each model's failure."""
    if data is None:
        return
    from toolkit.edge.data.datasets import list_split
    from toolkit.edge.errors import shown
    try:
        list_split(data, "val")
    except (FileNotFoundError, ValueError) as exc:
        fail(f"--data {shown(data)}: {first_line(exc)}")


def _schedules(providers: list[str] | None, hints: list[str] | None, specs: list[str] | None) -> list:
    """The schedules asked for, once each; refused where no provider asked for takes them (or the hints)."""
    from toolkit.edge.runtime import Schedule, providers_with

    hinted, scheduled = providers_with(precision_hint=True), providers_with(schedule=True)
    if hints and not set(hinted) & set(providers or []):
        fail(f"--precision-hint applies to --provider {' or '.join(hinted)} only")
    try:
        schedules = list(dict.fromkeys(Schedule.parse(text) for text in specs or ["1"]))
    except ValueError as exc:
        fail(f"--schedule: {exc}")
    if any(not s.plain for s in schedules) and not set(scheduled) & set(providers or ["cpu"]):
        fail(f"--schedule applies to the {' and '.join(scheduled)} providers")
    return schedules


def _row_line(row: dict) -> str:
    """A measured row as the progress line on stderr."""
    hint = f" ({row['compute']})" if row.get("compute") else ""
    hint += f", {row['schedule']}" if row.get("schedule") else ""
    return (f"  {row['model']} {row['precision']}{hint} {row['provider']} {row['backend']} batch "
            f"{row['batch_size']}: p50 {row['p50_ms']:.3f} ms, {row['throughput']:,.0f} img/s")


def _print_document(doc: dict, old: dict | None, as_json: bool, verbose: bool) -> None:
    """The document as JSON, or the table (with placement lines and the comparison to `old`)."""
    import json

    from toolkit.edge import bench as bench_lib

    comparison = bench_lib.compare_rows(doc, old) if old else None
    if as_json:
        typer.echo(json.dumps({**doc, "compare": comparison} if comparison else doc))
        return
    # Piped output has no terminal width; rich would assume 80 columns and squash the 16 columns.
    console = table_console()
    bench_lib.print_table(doc, console)
    if verbose:
        for line in bench_lib.placement_lines(doc):
            console.print(f"placement: {line}")
    if comparison and old:
        bench_lib.print_comparison(comparison, old, console)
