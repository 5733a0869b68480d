"""What `optimize` leaves in `--out`: the winning file with its deployment in the metadata
(`toolkit.deployment`, runtime/deployment.py), the candidates' files, report.json, report.md and
pareto.png (accuracy against the objective, the winner marked; skipped, said in one line, where
matplotlib — a dev dependency — is missing). Every file is written atomically."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import toolkit.edge.optimize.select as select
from toolkit.edge.bench.inputs import report_path
from toolkit.edge.bench.machine import machine_info
from toolkit.edge.data.fsio import atomic_write, atomic_write_text
from toolkit.edge.errors import shown
from toolkit.edge.optimize.accuracy import Accuracy, correct
from toolkit.edge.optimize.candidates import Candidate
from toolkit.edge.runtime.deployment import DEPLOYMENT_KEY, Deployment

if TYPE_CHECKING:
    from toolkit.edge.optimize.search import Search

UNIT = {"latency": "p50_ms", "throughput": "throughput"}


def deployment(search: Search, winner: Candidate) -> Deployment:
    return Deployment(winner.provider, winner.schedule.spec, winner.threads, winner.hint, search.opts.objective,
                      search.batch)


def reproduce(out: Path, search: Search, winner: Candidate) -> str:
    """The `toolkit bench` command that measures the winner's row again."""
    words = ["toolkit", "bench", "--model", str(out / "model.onnx"), "--provider", winner.provider,
             "--batch-size", str(search.batch), "--rounds", str(search.opts.rounds), "--seconds", "5"]
    words += ["--threads", str(winner.threads)] if winner.threads else []
    words += ["--schedule", winner.schedule.spec] if not winner.schedule.plain else []
    words += ["--precision-hint", winner.hint] if winner.hint else []
    return shlex.join(words)


def _report_numbers(search: Search, accuracy: Accuracy, winner: Candidate) -> dict:
    fp32, mine = accuracy.report(winner)
    agree = mine.predictions == fp32.predictions
    numbers: dict = {"agreement": round(float(agree.mean()), 5), "n_report": len(agree),
                     "agreement_ci95": [round(v, 5) for v in select.wilson(int(agree.sum()), len(agree))]}
    if search.parts.labelled:
        drop, (low, high) = select.drop_interval(correct(fp32), correct(mine))
        numbers.update(accuracy_drop=round(drop, 3), drop_ci95=[round(low, 3), round(high, 3)],
                       fp32_accuracy=round(fp32.accuracy, 5), accuracy=round(mine.accuracy, 5))
    else:
        numbers.update(accuracy_drop=None, drop_ci95=None)
    return numbers


def conclude(search: Search, accuracy: Accuracy) -> dict:
    """Choose the winner and measure it on the report split: the report document."""
    opts = search.opts
    measured = [c for c in search.candidates if c.status == "accepted" and c.rounds]
    winner, tied = select.choose(measured, opts.objective)
    winner.status = "winner"
    key = UNIT[opts.objective]
    row = winner.row or {}
    head = {"file": "model.onnx", "precision": winner.precision, "provider": winner.provider,
            "runtime": row.get("backend"), "schedule": winner.schedule.spec, "threads": winner.threads,
            "precision_hint": winner.hint, "objective": opts.objective, "batch_size": search.batch,
            key: round(select.value(winner), 4), "noise": round(select.noise(winner), 4),
            "tied_with": [c.label() for c in tied if c is not winner]}
    head.update(_report_numbers(search, accuracy, winner))
    return {
        "winner": head,
        "candidates": [c.to_json(opts.objective) for c in search.candidates],
        "objective": opts.objective, "batch_size": search.batch, "max_drop": opts.max_drop,
        "min_agreement": search.min_agreement, "labelled": search.parts.labelled,
        "providers": {"usable": search.usable, "unusable": search.unusable},
        "split": {"seed": opts.seed, "selection": len(search.parts.selection), "report": len(search.parts.report),
                  "how": "validation part of the fixed split, shuffled per class by the seed, dealt alternately"},
        "tie_rule": select.TIE_RULE,
        "ci_method": select.CI_METHOD if search.parts.labelled else select.AGREEMENT_CI_METHOD,
        "time_budget_s": opts.time_budget, "elapsed_s": round(search.budget.elapsed(), 1),
        "skipped_images": accuracy.skipped, "machine": machine_info(), "roof": search.roof,
        "model": shown(report_path(search.source)), "data": shown(report_path(search.data)),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def write_outputs(out: Path, search: Search, doc: dict) -> list[Path]:
    """The winner with its deployment, the candidates' files, report.json, report.md, pareto.png."""
    import onnx

    from toolkit.edge.contract import read_metadata, replace_metadata, write_model

    winner = next(c for c in search.candidates if c.status == "winner")
    out.mkdir(parents=True, exist_ok=True)
    proto = onnx.load(str(winner.path))
    placed = deployment(search, winner)
    replace_metadata(proto, {**read_metadata(proto), DEPLOYMENT_KEY: placed.to_json()})
    written = [write_model(proto, out / "model.onnx")]
    doc["winner"]["deployment"] = json.loads(placed.to_json())
    doc["reproduce"] = reproduce(out, search, winner)
    for kind in dict.fromkeys(c.kind for c in search.candidates if c.path is not None and c.kind != "fp32"):
        path = next(c.path for c in search.candidates if c.kind == kind and c.path is not None)
        assert path is not None
        written.append(_copy(path, out / "candidates" / f"{kind}.onnx"))
    written.append(atomic_write_text(out / "report.json", json.dumps(doc, indent=1) + "\n"))
    from toolkit.edge.optimize.markdown import markdown

    written.append(atomic_write_text(out / "report.md", markdown(doc)))
    plot = pareto(doc, out / "pareto.png", search.log)
    return written + ([plot] if plot else [])


def _copy(source: Path, target: Path) -> Path:
    return atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))


def _point_label(c: dict) -> str:
    words = [c["file"], c["provider"], *([c["precision_hint"]] if c["precision_hint"] else []),
             *([f"schedule {c['schedule']}"] if c["schedule"] != "1" else []),
             *([f"{c['threads']}t"] if c["threads"] else [])]
    return " ".join(words)


def pareto(doc: dict, path: Path, log) -> Path | None:
    """Selection accuracy (drop or agreement) against the objective, every measured candidate,
    accepted and rejected apart, the winner marked; None (and one line) without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        log("note: pareto.png skipped: it needs matplotlib (a dev dependency: pip install matplotlib)")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key, labelled = UNIT[doc["objective"]], doc["labelled"]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for status, marker, colour in (("accepted", "o", "tab:blue"), ("rejected", "x", "tab:red"),
                                   ("winner", "*", "tab:green")):
        rows = [c for c in doc["candidates"] if c["status"] == status and c[key] is not None]
        xs = [c[key] for c in rows]
        ys = [c["accuracy_drop_selection"] if labelled else 100 * (c["agreement_selection"] or 0) for c in rows]
        ax.scatter(xs, ys, marker=marker, s=160 if status == "winner" else 40, color=colour, label=status)
        for c, x, y in zip(rows, xs, ys):
            ax.annotate(_point_label(c), (x, y), fontsize=6, rotation=20)
    if labelled:
        ax.axhline(doc["max_drop"], linestyle="--", color="grey", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency per call (ms, log scale)" if key == "p50_ms" else "throughput (images/s, log scale)")
    ax.set_ylabel("accuracy drop vs fp32, selection split (points)" if labelled else "agreement with fp32 (%)")
    ax.set_title(f"{doc['model']}: batch {doc['batch_size']}, {doc['objective']}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return path


