"""report.md: the winner, its drop on the held-back report split with its interval, every
candidate with its status and reason, the providers that could not run, and the command that
measures the winner's row again."""

from __future__ import annotations


def _cell(value: object, fmt: str = "{}") -> str:
    return "—" if value is None else fmt.format(value)


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _threads(n: int | None) -> str:
    return "the runtime's default threads" if not n else f"{n} thread{'s' if n > 1 else ''}"


def _winner_lines(doc: dict) -> list[str]:
    w, labelled = doc["winner"], doc["labelled"]
    speed = (f"p50 {w['p50_ms']:.3f} ms per call" if doc["objective"] == "latency"
             else f"{w['throughput']:,.0f} images/s")
    hint = f", hint {w['precision_hint']}" if w["precision_hint"] else ""
    lines = [(f"**Winner**: `{w['file']}` — {w['precision']} on {w['provider']} ({w['runtime']}), schedule "
             f"{w['schedule']}, {_threads(w['threads'])}{hint}: {speed} at batch {w['batch_size']} "
             f"(round-to-round noise ±{w['noise']:.1%})."), ""]
    if labelled:
        low, high = w["drop_ci95"]
        lines.append(f"**On the held-back report split** ({w['n_report']:,} images, never used to choose): accuracy "
                     f"{w['accuracy']:.2%} vs fp32 {w['fp32_accuracy']:.2%}, drop {w['accuracy_drop']:+.2f} pt "
                     f"(95% CI {low:+.2f} … {high:+.2f} pt), top-1 agreement with fp32 {w['agreement']:.2%}.")
    else:
        low, high = w["agreement_ci95"]
        lines.append(f"**On the held-back report split** ({w['n_report']:,} images, never used to choose): top-1 "
                     f"agreement with fp32 {w['agreement']:.2%} (95% CI {low:.2%} … {high:.2%}).")
    if w["tied_with"]:
        lines += ["", f"Tied within the measured noise with: {', '.join(w['tied_with'])}; decided by the tie rule."]
    return lines


def markdown(doc: dict) -> str:
    """The whole report as markdown."""
    labelled = doc["labelled"]
    budget = (f"max drop {doc['max_drop']:g} pt" if labelled else "") + \
             (f"{', ' if labelled else ''}min agreement {doc['min_agreement']:.2%}" if doc["min_agreement"] else "")
    lines = [f"# toolkit optimize: {doc['model']}", "",
             (f"Objective **{doc['objective']}** at batch {doc['batch_size']}; {budget}; data {doc['data']} "
             f"({doc['split']['selection']:,} selection / {doc['split']['report']:,} report images, seed "
             f"{doc['split']['seed']}); {doc['elapsed_s']:.0f} s of a {doc['time_budget_s']:.0f} s budget on "
             f"{doc['machine'].get('slug', 'this machine')}."), ""]
    lines += _winner_lines(doc)
    lines += ["", ("| # | file | provider | hint | schedule | threads | drop (selection) | agreement | p50 ms | "
                  "images/s | ISA roof | status | reason |"),
              "|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for i, c in enumerate(doc["candidates"], 1):
        lines.append(f"| {i} | {c['file']} | {c['provider']} | {_cell(c['precision_hint'])} | {c['schedule']} | "
                     f"{_cell(c['threads'])} | {_cell(c['accuracy_drop_selection'], '{:+.2f} pt')} | "
                     f"{_cell(c['agreement_selection'], '{:.2%}')} | {_cell(c['p50_ms'], '{:.3f}')} | "
                     f"{_cell(c['throughput'], '{:,.0f}')} | {_share(c['isa_roof_share'])} | {c['status']} | "
                     f"{c['reason']} |")
    unusable = doc["providers"]["unusable"]
    if unusable:
        lines += ["", "Providers not usable here: " + "; ".join(f"{k}: {v}" for k, v in unusable.items()) + "."]
    lines += ["", f"Tie rule: {doc['tie_rule']}.", "", f"Interval: {doc['ci_method']}.", "",
              "Reproduce the winner's row:", "", "```", doc.get("reproduce", ""), "```", ""]
    return "\n".join(lines)
