"""The optimize options, declared once: `toolkit optimize` and `toolkit.optimize` take their
defaults, help texts and limits from OptimizeOptions. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from toolkit.edge.options import option

Objective = Literal["latency", "throughput"]
OBJECTIVES: tuple[Objective, ...] = get_args(Objective)
DEFAULT_BATCH = {"latency": 1, "throughput": 256}


class OptimizeError(RuntimeError):
    """An optimization that cannot be run as asked; one line for the user, nothing written."""


@dataclass
class OptimizeOptions:
    """What `toolkit optimize` searches and how it decides."""

    max_drop: float = option(0.5, "Largest accepted top-1 accuracy drop against fp32, in points, on the "
                                  "selection split (labelled data).", min=0.0)
    min_agreement: float | None = option(None, "Least top-1 agreement with fp32 on the selection split (default "
                                               "0.98 with --unlabeled; with labels, also required when given).",
                                         min=0.0, max=1.0)
    objective: str = option("latency", "latency: p50 per call at --batch-size (default 1); throughput: "
                                       "images/s at --batch-size (default 256).")
    batch_size: int | None = option(None, "Images per call the objective is measured at.", min=1)
    providers: tuple[str, ...] | None = option(None, "Providers to try (default: every one usable here, each probed; "
                                               "the unusable are listed with the reason).")
    time_budget: float = option(600.0, "Seconds the whole search may take; it always returns a winner within "
                                       "them, the most promising candidates first.", min=0.0)
    rounds: int = option(5, "Interleaved measuring rounds of the accepted candidates.", min=2)
    seed: int = option(0, "Seed of the selection/report split of the validation images.")
    calibration_images: int = option(500, "int8: training images used for calibration.", min=1)


UNLABELED_MIN_AGREEMENT = 0.98
