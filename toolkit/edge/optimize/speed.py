"""Measuring the candidates with the benchmark's own machinery (toolkit.edge.bench): each
candidate is a bench Plan (`measure.onnx_plans`: the session opened with its provider, hint,
schedule and threads, the first run timed apart), all plans are timed in interleaved rounds in one
`measure_plans` call, the roof is measured in the same run and every row gets its share of it.
The inputs are the selection split's own images, in the benchmark's rotating buffers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

import toolkit.edge.optimize.budget as timebox
from toolkit.edge.bench.inputs import InputPool
from toolkit.edge.bench.measure import BenchConfig, Context, Plan, make_row, measure_plans, onnx_plans
from toolkit.edge.bench.roof import measure_roof, shares
from toolkit.edge.errors import first_line
from toolkit.edge.optimize.candidates import Candidate
from toolkit.edge.optimize.select import round_values
from toolkit.edge.runtime import provider_is_cpu_side

WARMUP = 3


class Bench:
    """The plans of one optimize run, sharing the image pool and rotating batches."""

    def __init__(self, images: np.ndarray, source: str, batch: int, rounds: int,
                 log: Callable[[str], None]):
        # One round more than counted: the first is a warm-up round (select.round_values).
        self.cfg = BenchConfig(models=[], batch_sizes=[batch], warmup=WARMUP, rounds=rounds + 1)
        size = images.shape[1:3]
        self.pools = {("images", size[0], size[1]): InputPool(images, source)}
        self.batches: dict = {}
        self.log = log
        self.plans: list[tuple[Candidate, Plan, BenchConfig]] = []

    def prepare(self, candidate: Candidate) -> bool:
        """Open the candidate as a plan; False (and the reason on the candidate) when it cannot run."""
        cfg = replace(self.cfg, threads=candidate.threads, providers=[candidate.provider])
        ctx = Context(cfg, self.log, self.pools, self.batches)
        if candidate.path is None:
            raise ValueError(f"{candidate.label()}: no file")
        try:
            plans = onnx_plans(candidate.path, candidate.provider, candidate.hint, ctx, candidate.schedule)
        except Exception as exc:  # noqa: BLE001  (each runtime raises its own types; the failure is this candidate's)
            candidate.status, candidate.reason = "rejected", f"cannot run: {first_line(exc)}"
            return False
        self.plans.append((candidate, plans[0], cfg))
        return True

    def call_s(self) -> float:
        """The slowest prepared plan's first run: what one call may cost."""
        return max((plan.facts.get("first_run_s") or 0.0 for _, plan, _ in self.plans), default=0.0)

    def drop_last(self) -> Candidate:
        return self.plans.pop()[0]

    def measure(self, per_round_s: float, roof: bool, cores: int, objective: str) -> dict | None:
        """Time every prepared plan in interleaved rounds; fill each candidate's row and per-round
        objective values; return the roof measured beside them (None when `roof` is off)."""
        rounds = self.cfg.rounds
        by_plan = {id(plan): (candidate, cfg) for candidate, plan, cfg in self.plans}
        plans = [plan for _, plan, _ in self.plans]
        timing = replace(self.cfg, seconds=per_round_s * rounds)

        def done(plan: Plan) -> None:
            candidate, cfg = by_plan[id(plan)]
            candidate.row = make_row(plan, replace(timing, threads=cfg.threads))
            candidate.rounds = round_values(plan.timings, plan.round_ends, candidate.row["batch_size"], objective)

        measure_plans(plans, timing, done)
        runtimes = sorted({c.row["backend"] for c, _, _ in self.plans if c.row and provider_is_cpu_side(c.provider)})
        found = measure_roof(cores, runtimes, self.log) if roof and runtimes else None
        for candidate, _, _ in self.plans:
            if candidate.row is not None:
                candidate.row["isa_roof_share"], candidate.row["gemm_roof_share"] = shares(candidate.row, found)
        return found


def round_seconds(left: float, plans: int, rounds: int, call_s: float) -> float:
    """Measuring time per round and plan that fits `left` seconds, within [MIN_ROUND_S, MAX_ROUND_S]."""
    usable = left - plans * (WARMUP + 2) * call_s
    per_round = usable / max(plans * rounds, 1)
    return float(min(timebox.MAX_ROUND_S, max(timebox.MIN_ROUND_S, 5 * call_s, per_round)))
