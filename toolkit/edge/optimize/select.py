"""How the winner is chosen, and how sure the report is of its accuracy.

Acceptance (on the selection split): labelled data — the top-1 drop against fp32 is at most
`max_drop` points (and the top-1 agreement at least `min_agreement` when one is given); unlabelled
data — the agreement is at least `min_agreement`. A candidate outside is rejected, its number
the reason.

Speed: each accepted candidate's objective is taken per interleaved round (latency: the round's
p50 in ms, lower is better; throughput: the round's images/s, higher is better); its value is the
median over rounds. Two candidates are compared round by round (the rounds interleave them, so a
round's load hits both), by the median of their per-round log ratios and its noise.

TIE_RULE below is the rule for candidates within noise of the fastest; it never looks at which of
them measured faster, so a rerun whose timings land anywhere inside the noise picks the same one.
"""

from __future__ import annotations

import math

import numpy as np

from toolkit.edge.optimize.candidates import Candidate

TIE_FLOOR = 0.03          # below this gap two candidates swap places between reruns on this kind of machine
SAME_SIZE = 0.10          # files within this share of each other's size count as the same size
TIE_RULE = ("a candidate is tied with the fastest when the median over the interleaved rounds of the log of "
            "its per-round ratio to the fastest (a load spike that hits both in one round cancels) is at most the "
            f"larger of log(1 + {TIE_FLOOR:.0%}) and that median's 95% noise, 1.96 × 1.4826 × the median "
            "absolute deviation of the log ratios ÷ √rounds; among the tied the smaller file wins (files within "
            f"{SAME_SIZE:.0%} of the smallest count as the same size), then fewer moving parts (streams count 2, "
            "micro-batches 1, a bf16 hint 1), then fewer threads, then the earlier candidate in the search order "
            "(cheapest, most promising first); the first measuring round is a warm-up and not counted")
CI_METHOD = ("paired normal interval: per report image d = (fp32 correct) − (winner correct); drop = mean(d) "
             "± 1.96 · sd(d)/√n, in points")
AGREEMENT_CI_METHOD = "Wilson score interval of the top-1 agreement with fp32 on the report split"
Z95 = 1.959964


def accept(candidate: Candidate, labelled: bool, max_drop: float, min_agreement: float | None) -> None:
    """Set the candidate's status from its drop and agreement on the selection split."""
    if labelled and candidate.drop is not None and candidate.drop > max_drop:
        candidate.status, candidate.reason = "rejected", f"drop {candidate.drop:.2f} pt > {max_drop:g} pt"
    elif min_agreement is not None and candidate.agreement is not None and candidate.agreement < min_agreement:
        candidate.status = "rejected"
        candidate.reason = f"agreement {candidate.agreement:.2%} < {min_agreement:.2%}"
    else:
        candidate.status = "accepted"


def round_values(timings_s: list[float], round_ends: list[int], batch: int, objective: str) -> list[float]:
    """The objective in each measuring round after the first (a warm-up round: a runtime such as
    OpenVINO is still settling over its first second): p50 ms (latency) or images/s (throughput)."""
    values, start = [], round_ends[0] if len(round_ends) > 1 else 0
    for end in round_ends[1:] if len(round_ends) > 1 else round_ends:
        part = np.asarray(timings_s[start:end], dtype=np.float64)
        start = end
        if len(part):
            values.append(float(np.median(part)) * 1e3 if objective == "latency" else batch / float(part.mean()))
    return values


def value(candidate: Candidate) -> float:
    return float(np.median(candidate.rounds))


def _robust_spread(values: np.ndarray) -> float:
    return 1.4826 * float(np.median(np.abs(values - np.median(values)))) if len(values) > 1 else 0.0


def noise(candidate: Candidate) -> float:
    """Robust round-to-round spread of the candidate's objective, relative to its median."""
    rounds = np.asarray(candidate.rounds, dtype=np.float64)
    return _robust_spread(rounds) / value(candidate) if len(rounds) and value(candidate) else 0.0


def ratios(a: Candidate, b: Candidate, objective: str) -> np.ndarray:
    """Per interleaved round, how many times worse `a` is than `b` (1.1: 10% slower)."""
    n = min(len(a.rounds), len(b.rounds))
    ra, rb = np.asarray(a.rounds[:n], np.float64), np.asarray(b.rounds[:n], np.float64)
    return ra / rb if objective == "latency" else rb / ra


def gap(a: Candidate, b: Candidate, objective: str) -> float:
    """How much worse `a` is than `b`, relative (negative: better), from the median log ratio."""
    return math.exp(float(np.median(np.log(ratios(a, b, objective))))) - 1


def tied_with(a: Candidate, fastest: Candidate, objective: str) -> bool:
    """Whether `a` is within the measured noise of `fastest` (TIE_RULE)."""
    logs = np.log(ratios(a, fastest, objective))
    if not len(logs):
        return True
    noise95 = Z95 * _robust_spread(logs) / math.sqrt(len(logs))
    return float(np.median(logs)) <= max(math.log1p(TIE_FLOOR), noise95)


def choose(measured: list[Candidate], objective: str) -> tuple[Candidate, list[Candidate]]:
    """(winner, the candidates tied with the fastest) among accepted, measured candidates (TIE_RULE)."""
    if not measured:
        raise ValueError("no measured candidate to choose from")
    sign = 1 if objective == "latency" else -1
    fastest = min(measured, key=lambda c: (sign * value(c), c.order))
    tied = [c for c in measured if c is fastest or tied_with(c, fastest, objective)]

    def size(c: Candidate) -> int:
        return (c.row or {}).get("file_size_bytes") or 0

    smallest = min(size(c) for c in tied)

    def tie_key(c: Candidate) -> tuple:
        return (size(c) > smallest * (1 + SAME_SIZE), c.moving_parts, c.threads or 0, c.order)

    return min(tied, key=tie_key), tied


def drop_interval(reference_correct: np.ndarray, winner_correct: np.ndarray) -> tuple[float, tuple[float, float]]:
    """(drop in points, its 95% interval) from paired per-image correctness (CI_METHOD)."""
    d = reference_correct.astype(np.float64) - winner_correct.astype(np.float64)
    n = len(d)
    mean = float(d.mean()) if n else 0.0
    half = Z95 * float(d.std(ddof=1)) / math.sqrt(n) if n > 1 else 0.0
    return mean * 100, ((mean - half) * 100, (mean + half) * 100)


def wilson(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + Z95 ** 2 / (2 * n)) / (1 + Z95 ** 2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / (1 + Z95 ** 2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)
