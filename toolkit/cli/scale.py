"""`--engine ray` of `infer` and `eval`: the checks of its options and the calls into toolkit.edge.scale.

The local engine (the default) runs in this process; the Ray engine runs the same decoding and the
same model on a Ray cluster and, for `infer`, writes its rows into a results folder (--out) rather
than stdout. Options that belong to one engine are refused with the other, before any work.
"""

from __future__ import annotations

from pathlib import Path

import typer

from toolkit.cli.common import check_output_dir, fail, report, say
from toolkit.edge.errors import first_line, shown
from toolkit.edge.words import counted

ENGINE_HELP = "local: this process; ray: a Ray cluster (local, or --address), for folders of millions of images."
ADDRESS_HELP = "ray: join this running cluster (host:port, ray://…, auto) instead of starting a local one."
WORKERS_HELP = "ray: model workers (actors), each holding one model (default: as many as the CPUs or GPUs allow)."
THREADS_HELP = "ray: intra-op threads per worker, which is also the CPUs Ray gives it (default 1)."


def check_engine(engine: str, *, address: str | None, workers: int | None, threads: int | None,
                 out: Path | None = None, fmt: str | None = None, as_json: bool = False,
                 needs_out: bool = False) -> None:
    """Fail in one line, before any work, on an option of the other engine or a missing Ray install."""
    ray_only = {"--address": address, "--workers": workers, "--threads": threads, "--out": out, "--format": fmt}
    if engine != "ray":
        given = [name for name, value in ray_only.items() if value is not None]
        if given:
            fail(f"{', '.join(given)} applies to --engine ray only")
        return
    if as_json:
        fail("--json prints the local engine's rows; --engine ray writes them to --out (--format jsonl for JSON)")
    if needs_out and out is None:
        fail("--engine ray writes its results to a folder: give --out DIR")
    check_output_dir(out, "--out")
    from toolkit.edge.scale import ScaleError, require_ray
    try:
        require_ray()
    except ScaleError as exc:
        fail(first_line(exc))


def ray_options(address: str | None, workers: int | None, threads: int | None, batch_size: int):
    from toolkit.edge.scale import RayOptions
    return RayOptions(address=address, workers=workers, threads=threads or 1, batch_size=batch_size)


def ray_infer(inputs: list[str], model: Path, top_k: int, provider: str | None, precision_hint: str | None, out: Path,
              fmt: str, options) -> None:
    """`toolkit infer --engine ray`: rows into `out`, one line of summary, exit status 1 on any error row."""
    from toolkit.edge.runtime import ModelError, ProviderError
    from toolkit.edge.scale import ScaleError, ShardError, infer_to_folder

    try:
        summary = infer_to_folder(inputs, out, model, provider, top_k, fmt, options, precision_hint, on_error=report)
    except (ScaleError, ShardError, ModelError, ProviderError, OSError) as exc:
        fail(first_line(exc))
    if not summary.listed and not summary.errors:
        fail("no images found in the given paths")
    rate = summary.throughput
    workers = counted(len(rate.worker_peak_mb), "worker")
    speed = (f" in {rate.seconds:.1f} s ({rate.per_second:,.0f} images/s, {workers}, "
             f"peak {max(rate.worker_peak_mb.values()):,.0f} MB per worker)") if rate.worker_peak_mb else ""
    say(f"{shown(out)}: {counted(summary.new, 'image')} classified into {counted(summary.shards, 'new shard')}"
        f"{speed}; {summary.already:,} of {summary.listed:,} were there already")
    if summary.earlier_errors:
        rows = "has an error row" if summary.earlier_errors == 1 else "have error rows"
        report(f"{counted(summary.earlier_errors, 'image')} in {shown(out)} {rows} from an earlier run (the "
               f"`error` column); a rerun skips them")
    if summary.failed:
        raise typer.Exit(1)


def ray_evaluations(models: list[Path], listing, data: Path, provider: str, precision_hint: str | None, options,
                    bad) -> list:
    """`toolkit eval --engine ray`: the Evaluations the local engine's table prints."""
    from toolkit.edge.scale import ScaleError, evaluate_ray

    try:
        return evaluate_ray(models, listing, shown(data), provider, options, precision_hint, on_error=bad)
    except ScaleError as exc:
        fail(first_line(exc))
