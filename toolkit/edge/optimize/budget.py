"""The time box: what has been spent, and whether a step expected to cost so much still fits.

Steps are started only when their estimate fits beside what must still follow (measuring what was
accepted, the report split, writing); the estimates come from what this run has already measured
(the fp32 evaluation, earlier builds), so a slow machine is budgeted as the slow machine it is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

# A reading of the clock; tests replace it to make a budget's decisions independent of the machine.
now = time.monotonic

BUILD_FIXED_S = 4.0        # a quantize run's work that does not scale with images (graph passes, checks)
CALIBRATION_COST = 4.0     # an int8 build runs about this many fp32 inferences per calibration image
GUARD_IMAGES = 1000        # the int8 guard's images (training part); the fp16/int8 gate runs 1000 more
MIN_ROUND_S = 0.05         # the least measuring time per round and candidate worth having
MAX_ROUND_S = 1.0          # beyond this per round, more time no longer changes the ranking here
ROOF_S = 8.0               # measuring the machine's roof (issue rates, each runtime's GEMM)
SAFETY = 0.05              # share of the budget kept back for what estimates miss (a busy machine)
SAFETY_S = 1.0             # and this much more, for short budgets
WRITE_S = 3.0              # the winner, the reports and the plot


@dataclass
class Budget:
    seconds: float
    start: float = field(default_factory=lambda: now())
    spent: dict[str, float] = field(default_factory=dict)    # measured costs, by what was done

    def elapsed(self) -> float:
        return now() - self.start

    @property
    def usable(self) -> float:
        """The seconds planned with: the budget less its safety margin."""
        return self.seconds * (1 - SAFETY) - SAFETY_S

    def needed(self, more: float) -> float:
        """The budget that would leave `more` seconds after what is spent, margin included."""
        return (self.elapsed() + more + SAFETY_S) / (1 - SAFETY)

    def left(self) -> float:
        return self.usable - self.elapsed()

    def fits(self, cost: float, reserve: float = 0.0) -> bool:
        return self.elapsed() + cost + reserve <= self.usable


def build_estimate(kind: str, per_image_s: float, calibration_images: int, spent: dict[str, float]) -> float:
    """Seconds to build a file of `kind`: an earlier build of the same precision, else a model of
    the work in terms of this machine's fp32 time per image."""
    if kind == "fp32":
        return 0.0
    precision = kind.split("-")[0]
    if precision in spent:
        return spent[precision]
    images = GUARD_IMAGES * 2 + (calibration_images * CALIBRATION_COST if precision == "int8" else 0)
    return BUILD_FIXED_S + images * per_image_s * (2 if precision == "int8" else 1)


def measure_estimate(plans: int, rounds: int, call_s: float, warmup: int) -> float:
    """Seconds to measure `plans` candidates at the least time per round."""
    per_round = max(MIN_ROUND_S, 5 * call_s)
    return plans * (rounds * per_round + (warmup + 2) * call_s)
