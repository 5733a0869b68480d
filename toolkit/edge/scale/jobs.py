"""The two jobs of the Ray engine: classify images into a results folder, and evaluate classifiers
on a labelled split. Both give what the local engine gives, image for image: the same listing,
decoder, resize and top-k (toolkit.edge.infer). Never imports torch.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.edge.data.images import OnError
from toolkit.edge.errors import shown
from toolkit.edge.infer import Evaluation, _evaluation, match_labels
from toolkit.edge.scale.engine import RayOptions, ScaleError, Throughput, cluster, describe, run_pipeline
from toolkit.edge.scale.shards import ResultsFolder
from toolkit.edge.scale.sources import list_sources

SHARD_ROWS = 10_000               # rows per result shard …
SHARD_SECONDS = 60.0              # … or fewer, so that a crash loses at most this much work


@dataclass
class InferSummary:
    """What `infer_to_folder` did: images listed, already in the folder, classified by this run, errors."""
    listed: int = 0
    already: int = 0
    new: int = 0
    errors: int = 0               # error rows written by this run, and listing errors
    earlier_errors: int = 0       # listed images whose row from an earlier run is an error
    shards: int = 0
    throughput: Throughput = field(default_factory=Throughput)

    @property
    def failed(self) -> bool:
        return bool(self.errors or self.earlier_errors)


def _row(batch: dict, i: int) -> dict:
    error = str(batch["error"][i])
    return {"path": str(batch["path"][i]), "top": json.loads(str(batch["top"][i])), "error": error or None}


def infer_to_folder(sources: Sequence[str | os.PathLike], out: str | os.PathLike, model: str | os.PathLike,
                    provider: str | None = None, k: int = 3, fmt: str = "parquet", options: RayOptions | None = None,
                    precision_hint: str | None = None, on_error: OnError | None = None) -> InferSummary:
    """Classify every image of `sources` (sources.list_sources) not yet in the results folder `out`,
    writing one row per image into new shards (shards.py). An unreadable image is a row with its
    error, passed to `on_error` too, never a failed job. ScaleError / ShardError / ModelError for
    what stops the whole job, one line."""
    options = options or RayOptions()
    report = on_error or (lambda message: None)
    summary = InferSummary()

    def listing_error(message: str) -> None:
        summary.errors += 1
        report(message)

    paths = list_sources(sources, listing_error)
    summary.listed = len(paths)
    described, provider = describe(model, provider)
    results = ResultsFolder.open(out, fmt, model, k)
    todo = [p for p in paths if p not in results.done]
    summary.already = len(paths) - len(todo)
    summary.earlier_errors = sum(1 for p in paths if results.done.get(p))
    if not todo:
        return summary
    with cluster(options):
        pending: list[dict] = []
        last = time.perf_counter()
        summary.throughput = Throughput()
        for batch in run_pipeline([{"path": p} for p in todo], described, provider, k, options, precision_hint):
            summary.throughput.add(batch)
            for i in range(len(batch["path"])):
                pending.append(_row(batch, i))
                if pending[-1]["error"]:
                    listing_error(pending[-1]["error"])
            if len(pending) >= SHARD_ROWS or time.perf_counter() - last > SHARD_SECONDS:
                results.write(pending)
                summary.new, pending, last = summary.new + len(pending), [], time.perf_counter()
        if pending:
            results.write(pending)
            summary.new += len(pending)
    summary.shards = results.written
    return summary


def evaluate_ray(models: Sequence[str | os.PathLike], listing, source: str, provider: str | None = None,
                 options: RayOptions | None = None, precision_hint: str | None = None,
                 on_error: OnError | None = None, on_model_error: OnError | None = None) -> list[Evaluation]:
    """Top-1 accuracy of each classifier on a listed split of image files (datasets.SplitListing with
    files), one Ray job per model: the local engine's `evaluate_stream`, row for row. An unreadable
    image is reported once through `on_error` and left out for every model; a model that cannot be
    evaluated (not a classifier, labels that miss a class, a failed or non-finite run) goes to
    `on_model_error` (default `on_error`), one line, and is left out."""
    if listing.files is None:
        raise ScaleError(f"{shown(source)}: --engine ray reads image files; CIFAR-10 python batches are "
                         f"evaluated with the local engine")
    options = options or RayOptions()
    image_failed = on_error or (lambda message: None)
    model_failed = on_model_error or image_failed
    reported: set[str] = set()
    items = [{"path": str(p), "index": i} for i, p in enumerate(listing.files)]
    results = []
    with cluster(options):
        for path in models:
            try:
                described, chosen = describe(path, provider)
                to_label = match_labels(described.labels, listing.class_names, source)
            except ValueError as exc:          # ModelError is a ValueError
                model_failed(str(exc))
                continue
            rows: dict[int, tuple[str, bool, str]] = {}
            for batch in run_pipeline(items, described, chosen, 1, options, precision_hint):
                for index, top, error, failed in zip(batch["index"], batch["top"], batch["error"],
                                                     batch["model_failed"]):
                    rows[int(index)] = (json.loads(str(top))[0]["label"] if not error else "", bool(failed),
                                        str(error))
            failure = next((error for _, failed, error in rows.values() if failed), None)
            if failure is not None:
                model_failed(f"{shown(Path(path))}: {failure}")
                continue
            for i in sorted(rows):
                if rows[i][2] and rows[i][2] not in reported:
                    reported.add(rows[i][2])
                    image_failed(rows[i][2])
            kept = [i for i in sorted(rows) if not rows[i][2]]
            if not kept:
                continue
            preds = np.asarray([described.labels.index(rows[i][0]) for i in kept], dtype=np.int64)
            result = _evaluation(described, preds, to_label[listing.labels[kept]], listing.class_names)
            result.errors = sorted(reported)
            results.append(result)
    return results
