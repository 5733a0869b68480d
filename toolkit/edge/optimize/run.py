"""`optimize`, the whole run: check the request, search (search.py), conclude and write (report.py).
Never imports torch."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import toolkit.edge.optimize.budget as timebox
from toolkit.edge.optimize.accuracy import Accuracy
from toolkit.edge.optimize.candidates import make_candidates
from toolkit.edge.optimize.config import DEFAULT_BATCH, OptimizeError, OptimizeOptions
from toolkit.edge.optimize.report import conclude, write_outputs
from toolkit.edge.optimize.search import Progress, Search, check_request, probe, resolve_model, silent
from toolkit.edge.optimize.split import split_parts
from toolkit.edge.quantize.config import QuantizeOptions
from toolkit.edge.runtime import registry
from toolkit.edge.runtime.streams import available_cores


def optimize(model: str | os.PathLike, out: str | os.PathLike, data: str | os.PathLike | None = None,
             unlabeled: str | os.PathLike | None = None, options: OptimizeOptions | None = None,
             log: Callable[[str], None] = silent, progress: Progress = silent) -> dict:
    """Search, choose, write: returns the report document (report.json's content) with the
    written files under `files`. OptimizeError (one line, nothing written) for a request that
    cannot be met, including a budget too small to measure even fp32."""
    opts = options or OptimizeOptions()
    out_dir, data_dir = Path(out), Path(data) if data is not None else None
    unlabeled_dir = Path(unlabeled) if unlabeled is not None else None
    try:
        check_request(out_dir, data_dir, unlabeled_dir, opts)
    except registry.ProviderError as exc:
        raise OptimizeError(str(exc)) from None
    budget = timebox.Budget(opts.time_budget)
    source, size, labels = resolve_model(model)
    root = data_dir or unlabeled_dir
    assert root is not None
    parts = split_parts(root, data_dir is not None, labels, opts.seed)
    usable, unusable = probe(opts.providers)
    search = Search(source, size, labels, root, parts, opts, budget, usable, unusable, log, progress,
                    batch=opts.batch_size or DEFAULT_BATCH[opts.objective], cores=available_cores())
    search.candidates = make_candidates(usable, opts.objective, search.batch, search.cores)
    search.steps = len({c.kind for c in search.candidates}) + 4
    quantize = QuantizeOptions(split="train", calibration_images=opts.calibration_images, max_drop=opts.max_drop,
                               unlabeled=data_dir is None, min_agreement=search.min_agreement or 0.98,
                               guard_images=timebox.GUARD_IMAGES)
    with tempfile.TemporaryDirectory(prefix="toolkit-optimize-") as work:
        accuracy = Accuracy(source, root, parts, Path(work), quantize, log)
        search.step("fp32: evaluate the reference")
        search.reference_s = accuracy.evaluate_reference()
        search.time_one_call()
        if not budget.fits(search.tail_reserve(1)):
            raise OptimizeError(f"--time-budget {opts.time_budget:g} s is too small to measure even fp32 (its "
                                f"evaluation alone took {search.reference_s:.2f} s); give at least "
                                f"{math.ceil(budget.needed(search.tail_reserve(1)))} s")
        search.explore(accuracy)
        search.measure()
        search.step("the winner on the report split")
        doc = conclude(search, accuracy)
        search.step("write the winner and the reports")
        doc["files"] = [str(p) for p in write_outputs(out_dir, search, doc)]
    return doc
