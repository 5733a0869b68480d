"""The search behind `optimize` (run.py): from a contract classifier to the one file to ship here.

The steps, each inside the time box (budget.py): probe the providers; split the validation images
into selection and report parts (split.py); evaluate fp32 (the reference); build and evaluate the
candidates file by file, cheapest and most promising first (candidates.py, accuracy.py), each
accepted or rejected on the selection part (select.py); measure the evaluated candidates in
interleaved rounds with the benchmark's machinery (speed.py); choose the fastest accepted one by
the stated tie rule; measure its drop on the report part; write the winner with its deployment,
the reports and the plot (report.py). What had no time is listed as such.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import toolkit.edge.optimize.budget as timebox
from toolkit.edge.errors import shown
from toolkit.edge.optimize.accuracy import REFERENCE, Accuracy
from toolkit.edge.optimize.candidates import Candidate
from toolkit.edge.optimize.config import (
    OBJECTIVES,
    UNLABELED_MIN_AGREEMENT,
    OptimizeError,
    OptimizeOptions,
)
from toolkit.edge.optimize.select import accept
from toolkit.edge.optimize.speed import WARMUP, Bench, round_seconds
from toolkit.edge.optimize.split import Parts
from toolkit.edge.runtime import registry

Progress = Callable[[str, int, int], None]      # (what is being done, steps done, steps in all)
SPEED_IMAGES = 1024                             # selection images the speed runs draw their batches from


def silent(*_: object) -> None:
    return None


def resolve_model(model: str | os.PathLike) -> tuple[Path, tuple[int, int], list[str]]:
    """(file, input H×W, labels) of a zoo name or a contract classifier file; OptimizeError otherwise."""
    import json

    import toolkit.zoo as zoo
    from toolkit.edge.quantize.classifier import classifier_facts
    from toolkit.edge.quantize.variants import QuantizeError

    path = Path(model)
    if not path.exists() and str(model) in zoo.REGISTRY:
        path = zoo.REGISTRY[str(model)].onnx_path()
    if not path.is_file():
        raise OptimizeError(f"{shown(path)}: no such model file (or zoo name: {', '.join(zoo.REGISTRY)})")
    try:
        _, meta, size = classifier_facts(path)
    except QuantizeError as exc:
        raise OptimizeError(str(exc)) from None
    return path, size, json.loads(meta.get("toolkit.labels", "[]"))


def check_request(out: Path, data: Path | None, unlabeled: Path | None, opts: OptimizeOptions) -> None:
    """OptimizeError, before any work, for a request that cannot be met."""
    if (data is None) == (unlabeled is None):
        raise OptimizeError("give labelled images with --data DIR, or --unlabeled DIR to compare with fp32 instead"
                            if data is None else "--data and --unlabeled are exclusive; give one")
    if opts.max_drop < 0:
        raise OptimizeError(f"--max-drop {opts.max_drop:g}: a drop budget cannot be negative")
    if opts.min_agreement is not None and not 0 < opts.min_agreement <= 1:
        raise OptimizeError(f"--min-agreement {opts.min_agreement:g}: must lie in (0, 1]")
    if opts.time_budget <= 0:
        raise OptimizeError(f"--time-budget {opts.time_budget:g}: must be more than 0 seconds")
    if opts.objective not in OBJECTIVES:
        raise OptimizeError(f"--objective {opts.objective!r}: choose from {', '.join(OBJECTIVES)}")
    if opts.rounds < 2:
        raise OptimizeError("--rounds must be at least 2 (the noise is measured between rounds)")
    if out.exists() and not out.is_dir():
        raise OptimizeError(f"--out {shown(out)} is a file; give a folder")
    for name in opts.providers or ():
        registry.provider_facts(name)


def probe(asked: tuple[str, ...] | None) -> tuple[list[str], dict[str, str]]:
    """(usable providers, why each other one is not). One asked for by name must be usable."""
    from toolkit.edge.runtime import check_provider

    usable, unusable = [], {}
    for name in asked or tuple(registry.PROVIDER_TABLE):
        try:
            check_provider(name)
            usable.append(name)
        except registry.ProviderError as exc:
            if asked:
                raise OptimizeError(f"--providers {name}: {exc}") from None
            unusable[name] = str(exc).splitlines()[0] if str(exc) else "cannot run here"
    if not usable:
        raise OptimizeError("no provider can run a model here: " + "; ".join(f"{k}: {v}" for k, v in unusable.items()))
    return usable, unusable


@dataclass
class Search:
    """The state of one optimize run."""
    source: Path
    size: tuple[int, int]
    labels: list[str]
    data: Path
    parts: Parts
    opts: OptimizeOptions
    budget: timebox.Budget
    usable: list[str]
    unusable: dict[str, str]
    log: Callable[[str], None] = silent
    progress: Progress = silent
    batch: int = 1
    cores: int = 1
    candidates: list[Candidate] = field(default_factory=list)
    reference_s: float = 0.0
    call_s: float = 0.0
    roof: dict | None = None
    steps: int = 0
    done: int = 0

    @property
    def min_agreement(self) -> float | None:
        return self.opts.min_agreement if self.parts.labelled else self.opts.min_agreement or UNLABELED_MIN_AGREEMENT

    def step(self, text: str) -> None:
        self.log(f"[{self.budget.elapsed():.1f} s] {text}")
        self.progress(text, self.done, self.steps)
        self.done += 1

    def per_image_s(self) -> float:
        n = len(self.parts.selection)
        return self.reference_s / max(n, 1)

    def time_one_call(self) -> None:
        """One fp32 call at the objective's batch, timed (the second of two): what measuring costs
        per call, which the evaluation's time per image misjudges where its overhead dominates."""
        from toolkit.edge.runtime import open_model

        model = open_model(self.source, "cpu")
        batch = np.zeros((self.batch, *self.size, 3), np.uint8)
        model.run(batch)
        start = timebox.now()
        model.run(batch)
        self.call_s = timebox.now() - start

    def tail_reserve(self, plans: int) -> float:
        """What must still fit after exploring: measuring `plans` candidates, the report, writing."""
        return (timebox.measure_estimate(plans, self.opts.rounds + 1, self.call_s, WARMUP) + 2 * self.reference_s
                + timebox.WRITE_S)

    def explore(self, accuracy: Accuracy) -> None:
        """Build and evaluate the candidates file by file while their estimates fit."""
        kinds = list(dict.fromkeys(c.kind for c in self.candidates))
        for kind in kinds:
            group = [c for c in self.candidates if c.kind == kind]
            variants = len({c.variant for c in group})
            per_variant = self.reference_s * (2 if kind == "fp16" else 1)
            cost = timebox.build_estimate(kind, self.per_image_s(), self.opts.calibration_images,
                                          self.budget.spent) + variants * per_variant
            measured = sum(c.status == "accepted" for c in self.candidates)
            self.step(f"{kind}: {'build and ' if kind != 'fp32' else ''}evaluate")
            if not self.budget.fits(cost, self.tail_reserve(measured + len(group))):
                for c in group:         # the reference itself is already evaluated: it always competes
                    c.status, c.reason = "not tried", "no time"
                    if c.variant == REFERENCE:
                        c.drop, c.agreement = (0.0 if self.parts.labelled else None), 1.0
                        c.status, c.reason = "accepted", ""
                continue
            start = timebox.now()
            built = accuracy.build(kind)
            if kind != "fp32":
                precision = kind.split("-")[0]
                self.budget.spent[precision] = max(self.budget.spent.get(precision, 0.0), timebox.now() - start)
            if isinstance(built, str):
                for c in group:
                    c.status, c.reason = "rejected", built
                continue
            for c in group:
                c.path = built
            accuracy.evaluate(group)
            for c in group:
                if c.status != "rejected":
                    accept(c, self.parts.labelled, self.opts.max_drop, self.min_agreement)
            self.log(f"{kind}: built and evaluated in {timebox.now() - start:.1f} s (estimate {cost:.1f} s); "
                     f"{self.budget.elapsed():.0f} s of {self.budget.seconds:.0f} s spent")

    def speed_images(self) -> np.ndarray:
        """Up to SPEED_IMAGES decoded selection images at the model's size."""
        chunks = []
        for chunk in self.parts.selection.chunks([self.size], on_error=silent):
            chunks.append(chunk.images[self.size])
            if sum(len(c) for c in chunks) >= SPEED_IMAGES:
                break
        return np.concatenate(chunks)[:SPEED_IMAGES]

    def measure(self) -> None:
        """Time the evaluated candidates (accepted ones first) in interleaved rounds, as many as fit."""
        self.step("measure speed in interleaved rounds")
        bench = Bench(self.speed_images(), f"{len(self.parts.selection)} selection images of {shown(self.data)}",
                      self.batch, self.opts.rounds, self.log)
        tail = 2 * self.reference_s + timebox.WRITE_S
        order = [c for c in self.candidates if c.status == "accepted"] + \
                [c for c in self.candidates if c.status == "rejected" and c.agreement is not None]
        for c in order:
            need = timebox.measure_estimate(len(bench.plans) + 1, self.opts.rounds + 1, bench.call_s(), WARMUP)
            if not bench.plans or self.budget.fits(need, tail):
                bench.prepare(c)
            elif c.status == "accepted":
                c.status, c.reason = "not tried", "accepted on accuracy; no time to measure its speed"
        call = bench.call_s()
        while len(bench.plans) > 1 and not self.budget.fits(
                timebox.measure_estimate(len(bench.plans), self.opts.rounds + 1, call, WARMUP), tail):
            dropped = bench.drop_last()
            if dropped.status == "accepted":
                dropped.status, dropped.reason = "not tried", "accepted on accuracy; no time to measure its speed"
        roof = self.budget.fits(timebox.measure_estimate(len(bench.plans), self.opts.rounds + 1, call, WARMUP),
                                tail + timebox.ROOF_S)
        left = self.budget.left() - tail - (timebox.ROOF_S if roof else 0.0)
        per_round = round_seconds(left, len(bench.plans), self.opts.rounds + 1, call)
        self.roof = bench.measure(per_round, roof, self.cores, self.opts.objective)
        if not any(c.rounds for c in self.candidates if c.status == "accepted"):
            raise OptimizeError("no accepted candidate could be measured")
