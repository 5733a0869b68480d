"""Timing, statistics and rows: every model × provider (× OpenVINO precision hint) × batch size.

Every row is first prepared as a Plan (session open, inputs ready, one call to time); then the
plans are measured — one after another, or with `rounds` > 1 interleaved: each round gives every
plan its slice of the counted time in turn, so a noisy neighbour or a clock change hits every row
alike and the ratios between rows stay fair. Warm-up runs are excluded; every counted run is timed
and kept. Never imports torch: the PyTorch rows come from a plan maker the torch layer injects.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import toolkit.edge.bench.inputs as inp
import toolkit.zoo as zoo
from toolkit.edge.bench.inputs import BenchError, InputPool
from toolkit.edge.bench.machine import available_cores, machine_info
from toolkit.edge.bench.report import ROW_KEY
from toolkit.edge.bench.roof import measure_roof, remeasure_roof, shares
from toolkit.edge.bench.timing import DEFAULT_RUNS, accuracy_of, fixed_batch, latency_stats, time_runs
from toolkit.edge.errors import shown
from toolkit.edge.runtime import (
    PLAIN,
    Model,
    ModelError,
    ProviderError,
    Schedule,
    check_provider,
    int8_target,
    int8_target_of,
    open_model,
    provider_facts,
    provider_is_cpu_side,
)

DEFAULT_BATCH_SIZES = (1, 64)


@dataclass
class Plan:
    """A row waiting to be measured: its identity and facts, one timed call, its accuracy."""
    facts: dict
    call: Callable[[int], object]
    accuracy: tuple[float, int] | None = None
    metadata: dict = field(default_factory=dict)
    timings: list[float] = field(default_factory=list)
    round_ends: list[int] = field(default_factory=list)    # len(timings) after each round


@dataclass
class BenchConfig:
    """What to measure. `runs` and `seconds` are exclusive; with neither, DEFAULT_RUNS runs."""
    models: list[Path]
    providers: list[str] = field(default_factory=lambda: ["cpu"])
    batch_sizes: list[int] = field(default_factory=lambda: list(DEFAULT_BATCH_SIZES))
    threads: int | None = None          # None: one per available core, for every runtime alike
    warmup: int = 10
    runs: int | None = None
    seconds: float | None = None
    data: Path | None = None
    include_copy: bool = False
    cache_dir: Path | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)   # --shape NAME=DIMS
    precision_hints: list[str] = field(default_factory=lambda: ["f32"])  # OpenVINO rows: one set per hint
    rounds: int = 1                     # > 1: interleave the rows, each round a slice of every row
    roof: bool = True                   # measure the roof (issue rates, GEMM) in the same run
    strict_placement: bool = False      # refuse a row whose compute nodes do not all run on its provider
    # CPU-side rows (cpu, openvino): one set per schedule (streams.py); a schedule that would not cut a
    # batch in two makes no row for it (it would be the plain row again). GPU rows: the plain one.
    schedules: list[Schedule] = field(default_factory=lambda: [PLAIN])
    # The torch layer's PyTorch rows (`--torch`): (first ONNX plan of a model, context) → plans.
    torch_rows: Callable[[Plan, Context], list[Plan]] | None = None


@dataclass
class Context:
    """What the plans of one run share: the settings, the log, decoded pools and their batches."""
    cfg: BenchConfig
    log: Callable[[str], None]
    pools: dict = field(default_factory=dict)
    batches: dict = field(default_factory=dict)

    def images(self, size: tuple[int, int]) -> InputPool:
        key = ("images", size[0], size[1])
        if key not in self.pools:
            self.pools[key] = inp.image_pool((size[0], size[1]), self.cfg.data)
        return self.pools[key]

    def latents(self, dim: int) -> InputPool:
        key = ("latent", dim)
        if key not in self.pools:
            self.pools[key] = inp.latent_pool(dim)
        return self.pools[key]

    def rotating(self, pool: InputPool, batch_size: int) -> list[np.ndarray]:
        """Rotating batches of a pool, made once and shared by every row that feeds on them."""
        key = (id(pool), batch_size)
        if key not in self.batches:
            self.batches[key] = inp.rotating_buffers(pool.items, batch_size)
        return self.batches[key]


def default_models() -> list[Path]:
    """Every precision of every shipped classifier of the zoo that exists (int8: onnxruntime's and
    OpenVINO's files), then the generator."""
    classifiers = [spec for spec in zoo.REGISTRY.values() if spec.task == "classify"]
    files = (("fp32", "cpu"), ("fp16", "cpu"), ("int8", "cpu"), ("int8", "openvino"))
    candidates = [spec.onnx_path(precision, target) for spec in classifiers for precision, target in files]
    candidates.append(zoo.DCGAN.onnx_path())
    return [p for p in candidates if p.is_file()]


# ----------------------------------------------------------------------------- ONNX plans

def _load(path: Path):
    from toolkit.edge.onnxgraph import load_onnx

    return load_onnx(path, ModelError)


def _pool_for(specs: list[inp.TensorSpec], shapes: dict, meta: dict, ctx: Context) -> InputPool | None:
    """The real-data pool for a one-input contract-style model: uint8 [N, H, W, 3] images or a
    generator's float [N, D] latents; None for anything else (its inputs are synthesised)."""
    if len(specs) != 1:
        return None
    spec, shape = specs[0], shapes[specs[0].name]
    if spec.dtype == "uint8" and len(shape) == 4 and shape[3] == 3:
        return ctx.images((shape[1], shape[2]))
    latent = meta.get("toolkit.task") == "generate" or isinstance(spec.dims[1], int) if len(shape) == 2 else False
    if spec.dtype == "float" and latent:
        return ctx.latents(shape[1])
    return None


def _inputs(specs: list[inp.TensorSpec], shapes: dict, meta: dict,
            ctx: Context) -> tuple[InputPool | None, list[dict[str, np.ndarray]], str]:
    """(the real-data pool or None, the rotating feeds, where they come from) for one shape set."""
    pool = _pool_for(specs, shapes, meta, ctx)
    if pool is not None:
        feeds = [{specs[0].name: b} for b in ctx.rotating(pool, inp.batch_of(specs, shapes))]
        return pool, feeds, pool.source
    return None, inp.synthesised_feeds(specs, shapes), inp.synthesised_source(specs, shapes)


def _first_contact(model: Model, feed: dict[str, np.ndarray], label: str, create_s: float, source: str,
                   ctx: Context) -> tuple[dict[str, str], float, dict]:
    """(cache facts, first-run seconds, placement facts) of a freshly opened model, logged; with
    --strict-placement, ProviderError when its compute nodes are not all on its provider."""
    cache = model.cache_facts()          # read before the first run, which publishes a new cache
    first_s = model.first_run(feed)
    where = model.placement().facts()
    ctx.log(f"{label}: session {create_s:.3f} s, first run {first_s:.3f} s, nodes "
            + ", ".join(f"{k} {v}" for k, v in where["placement"].items())
            + "".join(f"; {node}" for node in where.get("compute_elsewhere", [])) + f"; inputs: {source}")
    if ctx.cfg.strict_placement and not where["placement_ok"]:
        elsewhere = where.get("compute_elsewhere") or [f"no node on {model.provider}"]
        raise ProviderError(f"{inp.report_path(model.path)} on {model.provider}: not every compute node runs there ("
                            f"{', '.join(elsewhere[:3])}{', …' if len(elsewhere) > 3 else ''}); refused by "
                            "--strict-placement")
    return cache, first_s, where


def onnx_plans(path: Path, provider: str, hint: str | None, ctx: Context,
               schedule: Schedule = PLAIN) -> list[Plan]:
    """One plan per distinct input shape set (batch sizes a static model cannot take collapse).
    TensorRT gets one session per shape set, its engine built for exactly that shape (an explicit
    profile) instead of being rebuilt when a larger batch arrives. Each session's first run is
    timed apart and never counted (`first_run_s`; on TensorRT, with the session creation where
    the engine is built or loaded, `engine_build_s`), and TensorRT rows get at least one warm-up."""
    cfg = ctx.cfg
    proto = _load(path)
    meta = {p.key: p.value for p in proto.metadata_props}
    specs = inp.signature(proto)
    precision = inp.guess_precision(proto)
    per_shape = provider_facts(provider).engine_per_shape
    shape_sets: list[dict] = []
    for batch_size in cfg.batch_sizes:
        shapes = inp.resolve_shapes(specs, cfg.shapes, batch_size, path.name)
        if shapes not in shape_sets and (schedule.plain or len(schedule.parts(inp.batch_of(specs, shapes))) > 1):
            shape_sets.append(shapes)

    def session(shapes: dict):
        start = time.perf_counter()
        model = open_model(path, provider, threads=cfg.threads, trt_fp16=precision == "fp16", cache_dir=cfg.cache_dir,
                           precision_hint=hint, shapes=shapes if per_shape else None, schedule=schedule)
        return model, time.perf_counter() - start

    plans: list[Plan] = []
    accuracy = None
    for index, shapes in enumerate(shape_sets):
        if index == 0 or per_shape:
            model, create_s = session(shapes)
            device = model.binds_io and not cfg.include_copy
        batch_size = inp.batch_of(specs, shapes)
        pool, feeds, source = _inputs(specs, shapes, meta, ctx)
        label = (f"{path.name} on {provider}{f' ({hint})' if hint else ''}"
                 f"{f', {schedule.label}' if schedule.label else ''} batch {batch_size}")
        cache, first_s, where = _first_contact(model, feeds[0], label, create_s, source, ctx)
        if index == 0 and pool is not None and meta.get("toolkit.task") == "classify":
            predict = fixed_batch(model.run, batch_size) if per_shape else model.run
            accuracy = accuracy_of(predict, model.labels, pool, path.name)
        macs = inp.multiply_adds(proto, shapes)
        facts = {"model": meta.get("toolkit.model", path.name.split(".")[0]), "precision": precision,
                 "provider": provider, "backend": model.runtime, "batch_size": batch_size,
                 "compute": "bf16" if hint == "bf16" else None, "schedule": schedule.label,
                 "file": inp.report_path(path),
                 "file_size_bytes": path.stat().st_size, "session_create_s": create_s, **where,
                 "first_run_s": first_s, "io_binding": device, "input": source, "input_buffers": len(feeds),
                 "shapes": {name: list(s) for name, s in shapes.items()},
                 "multiply_adds_per_item": round(macs / batch_size) if macs else None}
        if per_shape:
            facts.update(engine_build_s=create_s + first_s, warmup_runs=max(cfg.warmup, 1))
        facts.update(cache)
        plans.append(Plan(facts, model.timed_call(feeds, io_binding=device), accuracy, meta))
    return plans


# ----------------------------------------------------------------------------- the whole run

def name_files_apart(rows: list[dict]) -> None:
    """Rows are labelled by the model's name (`toolkit.model`), which a wrapped model, its int8
    variant and the original can all share: where one name covers several files, each of those
    rows is labelled by its file instead (file name, or the path where names repeat too)."""
    files: dict[str, set[str]] = {}
    paths: dict[str, set[str]] = {}
    for row in rows:
        files.setdefault(row["model"], set()).add(row["file"])
        paths.setdefault(Path(row["file"]).name, set()).add(row["file"])
    for row in rows:
        if len(files[row["model"]]) > 1:
            name = Path(row["file"]).name
            row["model"] = name if len(paths[name]) == 1 else row["file"]

def check_providers(providers: list[str]) -> None:
    """Raise ProviderError, with its real cause, for the first requested provider that cannot
    create and run a session here, before anything is measured."""
    for name in providers:
        check_provider(name)


def _pairs(models: list[Path], providers: list[str]) -> list[tuple[Path, str]]:
    """Model × provider, except that an int8 file quantized for one runtime (`toolkit.calibration`
    target: tensorrt, openvino, cpu = onnxruntime) is measured on that runtime only, whenever the
    same model's file for the row's runtime is given too."""
    schemes = {}
    for path in models:
        meta = {p.key: p.value for p in _load(Path(path)).metadata_props}
        schemes[path] = (meta.get("toolkit.model", Path(path).name), int8_target(meta))
    present = set(schemes.values())
    pairs = []
    for path in models:
        name, target = schemes[path]
        for provider in providers:
            wanted = int8_target_of(provider)
            if target is None or target == wanted or (name, wanted) not in present:
                pairs.append((Path(path), provider))
    return pairs


def make_row(plan: Plan, cfg: BenchConfig) -> dict:
    """One result row: the keys that identify it, the statistics, the settings, then the facts."""
    facts = dict(plan.facts)
    head = {k: facts.pop(k, None) for k in ROW_KEY}
    return {**head, **latency_stats(plan.timings, head["batch_size"]),
            "accuracy": plan.accuracy[0] if plan.accuracy else None,
            "accuracy_n": plan.accuracy[1] if plan.accuracy else None,
            "threads": cfg.threads, "warmup_runs": cfg.warmup, "runs": len(plan.timings), "rounds": cfg.rounds,
            **facts, "timings_ms": [round(t * 1e3, 4) for t in plan.timings]}


def measure_plans(plans: list[Plan], cfg: BenchConfig, done: Callable[[Plan], None]) -> None:
    """Time every plan; `done(plan)` as soon as a plan's timings are complete."""
    if cfg.rounds == 1:
        for plan in plans:
            plan.timings = time_runs(plan.call, plan.facts.get("warmup_runs", cfg.warmup), cfg.runs, cfg.seconds)
            plan.round_ends = [len(plan.timings)]
            done(plan)
        return
    for plan in plans:
        time_runs(plan.call, plan.facts.get("warmup_runs", cfg.warmup), runs=0)
    runs = math.ceil((cfg.runs or DEFAULT_RUNS) / cfg.rounds) if cfg.seconds is None else None
    seconds = cfg.seconds / cfg.rounds if cfg.seconds is not None else None
    for round_index in range(cfg.rounds):
        for plan in plans:
            plan.timings += time_runs(plan.call, 0, runs, seconds)
            plan.round_ends.append(len(plan.timings))
            if round_index == cfg.rounds - 1:
                done(plan)


def _check_config(cfg: BenchConfig) -> None:
    if not cfg.models:
        raise BenchError("no models to measure: none of the shipped models exist in models/ (pass --model)")
    if cfg.runs is not None and cfg.seconds is not None:
        raise BenchError("--runs and --seconds are exclusive")
    if cfg.rounds < 1:
        raise BenchError("--rounds must be at least 1")


def _all_onnx_plans(paths: list[Path], ctx: Context, failed: Callable[[Exception, Path], None]) -> list[Plan]:
    """Every model × provider (× precision hint × schedule where the provider takes them); a model
    that cannot be opened or run is `failed` and the others go on."""
    cfg, plans = ctx.cfg, []
    for path, provider in _pairs(paths, cfg.providers):
        hinted = provider_facts(provider).precision_hint
        hints: list[str | None] = list(cfg.precision_hints or ["f32"]) if hinted else [None]
        if hinted and inp.guess_precision(_load(path)) == "int8":
            # An int8 file computes in int8 whatever the hint; one set of rows (the first hint) says it.
            hints = hints[:1]
        schedules = cfg.schedules if provider_facts(provider).schedule else [PLAIN]
        for hint, schedule in ((h, s) for h in hints for s in schedules):
            try:
                plans += onnx_plans(path, provider, hint, ctx, schedule)
            except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own types; the failure is this model's)
                failed(exc, path)
    return plans


def run_benchmark(cfg: BenchConfig, on_row: Callable[[dict], None] | None = None,
                  log: Callable[[str], None] | None = None,
                  on_error: Callable[[str], None] | None = None) -> dict:
    """Measure every model × provider × batch size (the PyTorch rows last). Returns
    {"machine", "roof", "rows", "errors", "created", "command"}; `errors` (also passed to
    `on_error` as they happen) has one line per model that could not be measured."""
    _check_config(cfg)
    threads = cfg.threads or available_cores()
    cfg = replace(cfg, threads=threads)
    check_providers(cfg.providers)
    ctx = Context(cfg, log or (lambda message: None))
    # One model that cannot be read, opened or run is one error (`errors`, `on_error`); the
    # other models are still measured. Only when none is left does the run fail.
    errors: list[str] = []

    def model_failed(exc: Exception, path: Path | None = None) -> None:
        text = str(exc).strip()
        if path is not None:       # the file's name, control characters escaped, then one line
            text = text.replace(str(path), shown(path))
            text = text if text.startswith(shown(path)) else f"{shown(path)}: {text}"
        text = text.splitlines()[0] if text else type(exc).__name__
        errors.append(text)
        if on_error is not None:
            on_error(text)

    readable = []
    for path in cfg.models:
        try:
            if not Path(path).is_file():
                raise ModelError("no such model file")
            _load(Path(path))
            readable.append(Path(path))
        except ModelError as exc:
            model_failed(exc, Path(path))
    plans = _all_onnx_plans(readable, ctx, model_failed)
    if not plans:
        raise BenchError("no model could be measured" if errors else "nothing to measure")
    name_files_apart([plan.facts for plan in plans])
    if cfg.torch_rows is not None:
        first_per_model: dict[str, Plan] = {}
        for plan in plans:
            first_per_model.setdefault(plan.facts["model"], plan)
        for first in list(first_per_model.values()):
            plans += cfg.torch_rows(first, ctx)
    runtimes = sorted({p.facts["backend"] for p in plans if provider_is_cpu_side(p.facts["provider"])} - {"torch"})
    roof = measure_roof(threads, runtimes, ctx.log) if cfg.roof and runtimes else None
    rows = []

    def done(plan: Plan) -> None:
        row = make_row(plan, cfg)
        row["isa_roof_share"], row["gemm_roof_share"] = shares(row, roof)
        rows.append(row)
        if on_row:
            on_row(row)

    measure_plans(plans, cfg, done)
    if roof:
        remeasure_roof(roof, ctx.log)
        for row in rows:
            row["isa_roof_share"], row["gemm_roof_share"] = shares(row, roof)
    return {"machine": machine_info(), "roof": roof, "rows": rows, "errors": errors,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
