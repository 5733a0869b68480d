"""The `optimize` command: a thin shell over toolkit.edge.optimize (the search, the choice, the reports)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer

from toolkit.cli.common import app, each_of, fail, metavar
from toolkit.edge.errors import first_line
from toolkit.edge.optimize.config import Objective, OptimizeOptions
from toolkit.edge.options import PROVIDERS


def option_of(name: str, *flags: str, **extra: Any) -> Any:
    """The Typer option of the OptimizeOptions field `name`: default, help and limits declared there."""
    from toolkit.edge.options import help_text, limits

    default = next(f.default for f in dataclasses.fields(OptimizeOptions) if f.name == name)
    bounds = limits(OptimizeOptions, name)
    return typer.Option(default, *flags, help=help_text(OptimizeOptions, name), min=bounds.get("min"),
                        max=bounds.get("max"), **extra)


PROVIDERS_HELP = OptimizeOptions.__dataclass_fields__["providers"].metadata["help"]


@app.command()
def optimize(
    model: str = typer.Argument(..., metavar="MODEL", help="A contract classifier: a zoo name (cifar-cnn, "
                                                           "cifar-resnet), a shipped or wrapped file, or one "
                                                           "exported with --module."),
    out: Path = typer.Option(..., help="Folder for model.onnx (the winner, its deployment in its metadata), "
                                       "report.md, report.json, pareto.png and the candidates' files."),
    data: Path | None = typer.Option(None, help="Labelled images (class-per-folder tree or CIFAR-10 batches): "
                                                "accuracy against fp32 decides."),
    unlabeled: Path | None = typer.Option(None, help="Images without labels: top-1 agreement with fp32 decides."),
    max_drop: float = option_of("max_drop"),
    min_agreement: float | None = option_of("min_agreement"),
    objective: Objective = option_of("objective"),
    batch_size: int | None = option_of("batch_size"),
    providers: list[str] | None = typer.Option(None, "--providers", metavar=metavar(PROVIDERS),
                                               callback=each_of(PROVIDERS),
                                               help=f"Repeatable. {PROVIDERS_HELP}"),
    time_budget: float = option_of("time_budget"),
    rounds: int = option_of("rounds"),
    seed: int = option_of("seed"),
    calibration_images: int = option_of("calibration_images"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print what each stage does."),
):
    """Find the fastest deployment of a classifier on this machine within an accuracy budget:
    fp32, fp16 and each runtime's int8, every usable provider, hints, schedules and threads;
    accepted on a selection split, timed in interleaved rounds, the winner's drop measured on a
    held-back report split. Bad input is one line and writes nothing."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from toolkit.cli.common import check_batch_sizes
    from toolkit.edge.optimize import OptimizeError
    from toolkit.edge.optimize import optimize as run_optimize

    check_batch_sizes(batch_size)
    options = OptimizeOptions(max_drop=max_drop, min_agreement=min_agreement, objective=objective,
                              batch_size=batch_size, providers=tuple(providers) if providers else None,
                              time_budget=time_budget, rounds=rounds, seed=seed,
                              calibration_images=calibration_images)
    console = Console(stderr=True, highlight=False, markup=False)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TimeElapsedColumn(), console=console, transient=True)
    task = bar.add_task("optimize", total=None)

    def progress(text: str, done: int, total: int) -> None:
        bar.update(task, description=text, completed=done, total=total)

    def log(line: str) -> None:
        if verbose or line.startswith("note:"):
            console.print(line)

    try:
        with bar:
            doc = run_optimize(model, out, data=data, unlabeled=unlabeled, options=options, log=log,
                               progress=progress)
    except (OptimizeError, OSError) as exc:
        fail(first_line(exc))
    typer.echo(_summary(doc, out))


def _summary(doc: dict, out: Path) -> str:
    w = doc["winner"]
    speed = f"p50 {w['p50_ms']:.3f} ms" if doc["objective"] == "latency" else f"{w['throughput']:,.0f} images/s"
    drop = (f"drop {w['accuracy_drop']:+.2f} pt (95% CI {w['drop_ci95'][0]:+.2f} … {w['drop_ci95'][1]:+.2f})"
            if w["accuracy_drop"] is not None else f"agreement {w['agreement']:.2%}")
    counts: dict[str, int] = {}
    for c in doc["candidates"]:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    threads = f"{w['threads']} thread{'s' if w['threads'] > 1 else ''}" if w["threads"] else "default threads"
    return (f"winner: {w['precision']} on {w['provider']}, schedule {w['schedule']}, {threads}"
            f"{', hint ' + w['precision_hint'] if w['precision_hint'] else ''}: {speed} at batch "
            f"{w['batch_size']}; report split {drop}; candidates: "
            + ", ".join(f"{n} {s}" for s, n in counts.items()) + f"\nwrote {out / 'model.onnx'}, "
            f"{out / 'report.md'}, {out / 'report.json'}" + (f", {out / 'pareto.png'}" if any(
                p.endswith("pareto.png") for p in doc["files"]) else ""))
