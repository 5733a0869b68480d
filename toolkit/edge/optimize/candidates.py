"""The candidates: which file (fp32, fp16, each runtime's int8) runs on which provider, with which
precision hint, schedule and threads — and in which order they are tried.

Order (what a time budget cuts first is last here): files that need no building before those that
do (fp32, then each usable runtime's int8 in provider order, then fp16 — fp16 first where a GPU
provider is usable, since there it is the likeliest win); within a file, the providers in the order
asked; then the hints and settings. Every quantized file is built once (quantize/classifier.py) and
run by every provider that can: fp16 by all, an int8 file by the providers of its scheme only
(registry.int8_target_of).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from toolkit.edge.runtime import PLAIN, Schedule, int8_target_of, provider_facts

MICRO_BATCH = 32          # items per micro-batch in the throughput schedules (streams.py says why)


@dataclass
class Candidate:
    """One way to deploy: a file kind on a provider with its settings, and what was found."""
    kind: str                        # fp32 | fp16 | int8-<target>
    provider: str
    schedule: Schedule = PLAIN
    threads: int | None = None
    hint: str | None = None
    order: int = 0
    status: str = "pending"          # accepted | rejected | not tried | winner
    reason: str = ""
    path: Path | None = None
    drop: float | None = None        # points, on the selection split (labelled data)
    agreement: float | None = None   # top-1 agreement with fp32 on the selection split
    rounds: list[float] = field(default_factory=list)   # the objective per measuring round
    row: dict | None = None          # the benchmark row (toolkit.edge.bench.measure.make_row)

    @property
    def precision(self) -> str:
        return self.kind.split("-")[0]

    @property
    def variant(self) -> tuple[str, str, str | None]:
        """What accuracy depends on: file, provider, hint (schedules and threads change time only)."""
        return self.kind, self.provider, self.hint

    @property
    def moving_parts(self) -> int:
        """What can go wrong in deployment, counted: streams (threads cooperating), micro-batches,
        a reduced-precision compute hint."""
        return 2 * (self.schedule.streams > 1) + (self.schedule.micro_batch > 0) + (self.hint == "bf16")

    def label(self) -> str:
        text = f"{self.kind} on {self.provider}"
        text += f" ({self.hint})" if self.hint else ""
        text += f", {self.schedule.label}" if self.schedule.label else ""
        return text + (f", {self.threads} thread{'s' if self.threads != 1 else ''}" if self.threads else "")

    def to_json(self, objective: str) -> dict:
        row = self.row or {}
        return {"precision": self.precision, "file": self.kind, "provider": self.provider,
                "schedule": self.schedule.spec, "threads": self.threads, "precision_hint": self.hint,
                "status": self.status, "reason": self.reason,
                "accuracy_drop_selection": None if self.drop is None else round(self.drop, 3),
                "agreement_selection": None if self.agreement is None else round(self.agreement, 5),
                "p50_ms": row.get("p50_ms"), "throughput": row.get("throughput"),
                "objective_rounds": [round(v, 4) for v in self.rounds],
                "isa_roof_share": row.get("isa_roof_share"), "gemm_roof_share": row.get("gemm_roof_share"),
                "file_size_bytes": row.get("file_size_bytes")}


def file_kinds(providers: list[str]) -> list[str]:
    """The files worth making for these providers, cheapest and most promising first."""
    int8 = list(dict.fromkeys(f"int8-{int8_target_of(p)}" for p in providers))
    on_gpu = any(not provider_facts(p).cpu_side for p in providers)
    return ["fp32", *(["fp16", *int8] if on_gpu else [*int8, "fp16"])]


def settings(provider: str, objective: str, batch: int, cores: int) -> list[tuple[Schedule, int | None]]:
    """(schedule, threads) worth trying: a GPU provider runs plain; a CPU-side one all cores, plus
    one thread for latency (a small model's batch of one can lose more to thread hand-offs than it
    gains), plus micro-batches and streams for throughput where they cut the batch."""
    if not provider_facts(provider).schedule:
        return [(PLAIN, None)]
    found: list[tuple[Schedule, int | None]] = [(PLAIN, cores)]
    if objective == "latency":
        return found + ([(PLAIN, 1)] if cores > 1 else [])
    for plan in (Schedule(1, MICRO_BATCH), Schedule(cores, MICRO_BATCH), Schedule(cores, 0)):
        if plan not in [s for s, _ in found] and len(plan.parts(batch)) > 1:
            found.append((plan, cores))
    return found


def hints(provider: str, kind: str) -> list[str | None]:
    """OpenVINO's f32 and bf16 hints for the fp32 file (an int8 file computes in int8 whatever the
    hint; the fp16 file is tried at f32)."""
    if not provider_facts(provider).precision_hint:
        return [None]
    return ["f32", "bf16"] if kind == "fp32" else ["f32"] if kind == "fp16" else [None]


def make_candidates(providers: list[str], objective: str, batch: int, cores: int) -> list[Candidate]:
    """Every candidate for these (usable) providers, in the order they are tried."""
    found: list[Candidate] = []
    for kind in file_kinds(providers):
        for provider in providers:
            if kind.startswith("int8-") and kind != f"int8-{int8_target_of(provider)}":
                continue
            for hint in hints(provider, kind):
                for plan, threads in settings(provider, objective, batch, cores):
                    found.append(Candidate(kind, provider, plan, threads, hint, order=len(found)))
    return found
