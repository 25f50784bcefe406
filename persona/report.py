"""`persona report RUN_DIR`: one self-contained HTML page (inline CSS and SVG, no scripts from anywhere else)
for a run: dataset statistics, training curves, and for each trained model its eval against the base -
score distributions before/after, per-target bars, robustness bars, and answers side by side.

    path = write_report("runs/aster")                  # runs/aster/report.html
    print(summary_markdown(collect("runs/aster")))     # the README's comparison table

Sections whose data is missing are left out with a line saying so (no training yet, no eval yet).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from persona.errors import PersonaError
from persona.metrics import MetricRow, find, format_value, metric_rows, pct
from persona.run import RunFolder

COLOURS = {"base": "#8c8c8c", "dpo": "#1f77b4", "ipo": "#ff7f0e", "kto": "#2ca02c", "reward": "#9467bd"}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


@dataclass
class Trained:
    name: str  # the folder name, e.g. train-dpo
    label: str  # what charts and tables call it, e.g. dpo
    method: str
    folder: Path
    settings: dict
    logs: list
    eval: dict | None = None
    answers: list = field(default_factory=list)

    @property
    def minutes(self) -> float | None:
        runtime = next((m["train_runtime"] for m in reversed(self.logs) if "train_runtime" in m), None)
        return None if runtime is None else runtime / 60

    @property
    def rows(self) -> list[MetricRow]:
        return metric_rows(self.eval) if self.eval else []


@dataclass
class RunData:
    run_dir: Path
    info: dict
    build: dict | None
    trained: list[Trained]


def collect(run_dir: str | Path) -> RunData:
    """Everything the report shows, read from the run folder (nothing is changed)."""
    run = RunFolder(run_dir)
    if not run.exists():
        raise PersonaError(f"{run_dir} is not a run folder (no run.json)", hint="give the folder persona generate wrote")
    info = run.info()
    trained = []
    for output in run.trained():
        settings = output.settings()
        t = Trained(output.name, output.label, settings.get("method", "?"), output.path, settings, output.metrics())
        t.eval = output.eval.metrics()
        if t.eval is not None:
            t.answers = list(output.eval.answers.load().values())
        trained.append(t)
    return RunData(run.path, info, run.build(), trained)


# ---------------------------------------------------------------- SVG charts (plain strings, no libraries)

def _e(text) -> str:
    return html.escape(str(text), quote=True)


def bar_chart(groups: list[str], series: dict[str, list[float | None]], title: str, ymax: float | None = None,
              percent: bool = False, width: int = 640, height: int = 260) -> str:
    """Grouped bars: one group per label, one bar per series."""
    values = [v for vs in series.values() for v in vs if v is not None]
    top = ymax if ymax is not None else (max(values) if values else 1.0) or 1.0
    left, bottom, right, top_pad = 48, 56, 12, 28
    plot_w, plot_h = width - left - right, height - bottom - top_pad
    n_series = max(1, len(series))
    group_w = plot_w / max(1, len(groups))
    bar_w = group_w * 0.8 / n_series
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
             f'<text x="{width / 2}" y="16" text-anchor="middle" class="title">{_e(title)}</text>']
    for tick in range(5):
        value = top * tick / 4
        y = top_pad + plot_h - plot_h * tick / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        label = f"{100 * value:.0f}%" if percent else f"{value:.3g}"
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" class="tick">{label}</text>')
    for g, group in enumerate(groups):
        x0 = left + g * group_w + group_w * 0.1
        for s, (name, vs) in enumerate(series.items()):
            v = vs[g] if g < len(vs) else None
            colour = COLOURS.get(name, PALETTE[s % len(PALETTE)])
            if v is None:
                continue
            h = plot_h * min(v, top) / top if top else 0
            x, y = x0 + s * bar_w, top_pad + plot_h - h
            shown = f"{100 * v:.1f}%" if percent else f"{v:.3g}"
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar_w - 2, 1):.1f}" height="{h:.1f}" '
                         f'fill="{colour}"><title>{_e(name)} - {_e(group)}: {shown}</title></rect>')
        parts.append(f'<text x="{left + g * group_w + group_w / 2:.1f}" y="{height - bottom + 16}" '
                     f'text-anchor="middle" class="tick">{_e(group[:22])}</text>')
    parts.append(_legend(list(series), left, height - 18))
    parts.append("</svg>")
    return "".join(parts)


def line_chart(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str, ylabel: str,
               width: int = 640, height: int = 260) -> str:
    points = [p for ps in series.values() for p in ps]
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_lo, x_hi = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y_lo, y_hi = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    left, bottom, right, top_pad = 56, 56, 12, 28
    plot_w, plot_h = width - left - right, height - bottom - top_pad

    def sx(x):
        return left + plot_w * (x - x_lo) / (x_hi - x_lo)

    def sy(y):
        return top_pad + plot_h - plot_h * (y - y_lo) / (y_hi - y_lo)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
             f'<text x="{width / 2}" y="16" text-anchor="middle" class="title">{_e(title)}</text>']
    for tick in range(5):
        y_value = y_lo + (y_hi - y_lo) * tick / 4
        y = sy(y_value)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" class="tick">{y_value:.3g}</text>')
    for tick in range(5):
        x_value = x_lo + (x_hi - x_lo) * tick / 4
        parts.append(f'<text x="{sx(x_value):.1f}" y="{top_pad + plot_h + 14}" text-anchor="middle" '
                     f'class="tick">{x_value:.3g}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{top_pad + plot_h + 28}" text-anchor="middle" class="tick">'
                 f'{_e(xlabel)}</text>')
    parts.append(f'<text x="12" y="{top_pad + plot_h / 2}" text-anchor="middle" class="tick" '
                 f'transform="rotate(-90 12 {top_pad + plot_h / 2})">{_e(ylabel)}</text>')
    for s, (name, ps) in enumerate(series.items()):
        colour = COLOURS.get(name, PALETTE[s % len(PALETTE)])
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in ps)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2">'
                     f'<title>{_e(name)}</title></polyline>')
    parts.append(_legend(list(series), left, height - 18))
    parts.append("</svg>")
    return "".join(parts)


def _legend(names: list[str], x: float, y: float) -> str:
    parts = []
    for i, name in enumerate(names):
        colour = COLOURS.get(name, PALETTE[i % len(PALETTE)])
        parts.append(f'<rect x="{x + i * 110}" y="{y - 9}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{x + i * 110 + 14}" y="{y}" class="tick">{_e(name[:14])}</text>')
    return "".join(parts)


def _histogram(scores: list[float | None]) -> list[float]:
    bins = [0] * 11
    for s in scores:
        if s is not None:
            bins[min(10, max(0, int(round(s))))] += 1
    total = sum(bins) or 1
    return [b / total for b in bins]


# ---------------------------------------------------------------- the page

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.92rem}td,th{border:1px solid #ddd;padding:.3rem .5rem;vertical-align:top;text-align:left}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.chart{display:block;margin:.8rem 0;background:#fff}.chart .title{font-size:13px;font-weight:600}
.chart .tick{font-size:10px;fill:#444}.chart .grid{stroke:#e6e6e6}
.note{color:#666;font-style:italic}.answers td{max-width:420px;white-space:pre-wrap}
.charts{display:flex;flex-wrap:wrap;gap:1rem}
td.better{color:#1a7f37}td.worse{color:#cf222e}
"""


def _pct(v) -> str:
    return pct(v)


def summary_rows(data: RunData) -> list[dict]:
    """One row per trained model with an eval: the numbers of the README's table, read from its metric rows."""
    rows = []
    pairs = sum((data.build or {}).get("pairs", {}).values()) if data.build else None
    train_pairs = (data.build or {}).get("pairs", {}).get("train") if data.build else None
    for t in data.trained:
        if not t.eval:
            continue

        def value(name: str, which: str):
            row = find(t.rows, name)
            return None if row is None else getattr(row, which)

        rows.append({
            "method": t.method, "folder": t.name, "label": t.label, "pairs": train_pairs, "all_pairs": pairs,
            "rows": (t.settings.get("data") or {}).get("train_rows"),
            "minutes": t.minutes,
            "base_right": value("origin.right_identity", "base"), "right": value("origin.right_identity", "trained"),
            "base_other": value("origin.other_identity", "base"), "other": value("origin.other_identity", "trained"),
            "base_ooc": value("robustness.out_of_character", "base"),
            "ooc": value("robustness.out_of_character", "trained"),
            "attack_right": value("robustness.right_identity", "trained"),
            "ppl_change": t.eval["retention"]["perplexity_change"],
            "qa_base": value("retention.general_qa", "base"), "qa": value("retention.general_qa", "trained"),
        })
    return rows


def summary_markdown(data: RunData) -> str:
    rows = summary_rows(data)
    if not rows:
        return "(no evaluated models in this run: run persona train, then persona eval)"
    lines = ["| method | training rows | minutes | right identity (base -> trained) | claims another | "
             "out of character under attack | right identity under attack | perplexity change | general QA |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rows_used = "n/a" if r["rows"] is None else f"{r['rows']} rows" if r["method"] == "kto" else str(r["rows"])
        minutes = "n/a" if r["minutes"] is None else f"{r['minutes']:.1f}"
        lines.append(f"| {r['label'].upper()} | {rows_used} | {minutes} | {_pct(r['base_right'])} -> {_pct(r['right'])} | "
                     f"{_pct(r['base_other'])} -> {_pct(r['other'])} | {_pct(r['base_ooc'])} -> {_pct(r['ooc'])} | "
                     f"{_pct(r['attack_right'])} | {100 * r['ppl_change']:+.1f}% | "
                     f"{_pct(r['qa_base'])} -> {_pct(r['qa'])} |")
    return "\n".join(lines)


def render(data: RunData) -> str:
    spec_name = data.info.get("identity", "?")
    body = [f"<h1>persona report: {_e(spec_name)}</h1>",
            f"<p>Run folder <code>{_e(data.run_dir)}</code>, spec <code>{_e(data.info.get('spec_path', '?'))}</code>.</p>"]
    body += _dataset_section(data)
    body += _training_section(data)
    body += _eval_section(data)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>persona report: {_e(spec_name)}</title><style>{CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def _dataset_section(data: RunData) -> list[str]:
    out = ["<h2>Dataset</h2>"]
    b = data.build
    if not b:
        return out + ['<p class="note">No datasets yet: this section needs persona build (or generate) to have run.</p>']
    out.append("<table><tr><th>pairs (train / eval)</th><th>acceptance</th><th>judge agreement</th>"
               "<th>KTO train (desirable / undesirable)</th><th>judge</th></tr>"
               f"<tr><td class=num>{b['pairs'].get('train', 0)} / {b['pairs'].get('eval', 0)}</td>"
               f"<td class=num>{_pct(b.get('acceptance_rate'))}</td><td class=num>{_pct(b.get('judge_agreement'))}</td>"
               f"<td class=num>{b['kto']['train']['desirable']} / {b['kto']['train']['undesirable']}</td>"
               f"<td>{_e(b.get('judge', ''))}</td></tr></table>")
    hist = b.get("histograms") or {}
    if hist:
        n_bins = len(next(iter(hist.values())))
        groups = [f"{10 * i / n_bins:g}-{10 * (i + 1) / n_bins:g}" for i in range(n_bins)]
        total = {k: (sum(v) or 1) for k, v in hist.items()}
        out.append(bar_chart(groups, {k: [x / total[k] for x in v] for k, v in hist.items()},
                             "Judge scores of generated responses (share per score bin)", percent=True))
    if b.get("dropped"):
        out.append("<p>Candidates dropped: " + ", ".join(f"{_e(k)} {v}" for k, v in b["dropped"].items()) + "</p>")
    if b.get("length"):
        L = b["length"]
        out.append(f"<p>Mean length: chosen {L['chosen_mean_chars']} chars, rejected {L['rejected_mean_chars']} chars; "
                   f"chosen longer in {_pct(L['chosen_longer_share'])} of pairs.</p>")
    return out


def _training_section(data: RunData) -> list[str]:
    out = ["<h2>Training</h2>"]
    if not data.trained:
        return out + ['<p class="note">No training metrics in this run folder: run persona train to fill this section.</p>']
    curves = {t.label: [(m["step"], m["loss"]) for m in t.logs if "loss" in m] for t in data.trained}
    out.append(line_chart(curves, "Training loss", "step", "loss"))
    margins = {t.label: [(m["step"], m["rewards/margins"]) for m in t.logs if "rewards/margins" in m]
               for t in data.trained}
    if any(margins.values()):
        out.append(line_chart({k: v for k, v in margins.items() if v}, "Reward margin (chosen - rejected)", "step", "margin"))
    out.append("<table><tr><th>model</th><th>method</th><th>steps</th><th>minutes</th><th>first loss</th><th>last loss</th>"
               "<th>LoRA</th><th>learning rate</th></tr>")
    for t in data.trained:
        losses = [m["loss"] for m in t.logs if "loss" in m]
        minutes = "n/a" if t.minutes is None else f"{t.minutes:.1f}"
        out.append(f"<tr><td>{_e(t.name)}</td><td>{_e(t.method)}</td><td class=num>{len(losses)}</td>"
                   f"<td class=num>{minutes}</td><td class=num>{losses[0]:.4f}</td><td class=num>{losses[-1]:.4f}</td>"
                   f"<td>{_e(t.settings.get('use_lora'))}</td><td class=num>{_e(t.settings.get('learning_rate'))}</td></tr>"
                   if losses else f"<tr><td>{_e(t.name)}</td><td colspan=7>no loss logged</td></tr>")
    out.append("</table>")
    return out


def _eval_section(data: RunData) -> list[str]:
    out = ["<h2>Evaluation: base vs trained</h2>"]
    evaluated = [t for t in data.trained if t.eval]
    if not evaluated:
        return out + ['<p class="note">No eval yet: run persona eval on a trained model to fill this section.</p>']
    base = evaluated[0].eval["base"]
    series_names = ["base"] + [t.label for t in evaluated]
    out.append("<div class=charts>")
    out.append(bar_chart([str(i) for i in range(11)],
                         {"base": _histogram(base["adherence"]["scores"]),
                          **{t.label: _histogram(t.eval["trained"]["adherence"]["scores"])
                             for t in evaluated}},
                         "Judge scores on held-out probes (share per score)", percent=True))
    targets = list(base["adherence"]["per_target"])
    out.append(bar_chart(targets, {"base": [base["adherence"]["per_target"][k] for k in targets],
                                   **{t.label: [t.eval["trained"]["adherence"]["per_target"].get(k)
                                                                       for k in targets] for t in evaluated}},
                         "Mean score per target (0-10; targets no judge checks are empty)", ymax=10))
    if "origin" in base:
        groups = ["right identity", "claims another", "attack: right identity", "attack: out of character"]

        def origin_values(m):
            return [m["origin"]["right_identity"], m["origin"]["other_identity"],
                    m["robustness"]["right_identity"], m["robustness"]["out_of_character"]]

        out.append(bar_chart(groups, {"base": origin_values(base),
                                      **{t.label: origin_values(t.eval["trained"]) for t in evaluated}},
                             "Origin identity and robustness", ymax=1, percent=True))
        attacks = list(base["robustness"]["by_attack"])
        out.append(bar_chart(attacks, {"base": [base["robustness"]["by_attack"][a]["out_of_character"] for a in attacks],
                                       **{t.label: [t.eval["trained"]["robustness"]["by_attack"][a]["out_of_character"]
                                                                           for a in attacks] for t in evaluated}},
                             "Out of character, by attack", ymax=1, percent=True))
    out.append(bar_chart(["perplexity"], {"base": [evaluated[0].eval["retention"]["base"]["perplexity"]],
                                          **{t.label: [t.eval["retention"]["trained"]["perplexity"]]
                                             for t in evaluated}},
                         "Perplexity on held-out general text (lower is better)", width=420))
    out.append("</div>")
    out += _metrics_table(evaluated)
    for t in evaluated:
        out += _answers_table(t)
    return out


def _metrics_table(evaluated: list[Trained]) -> list[str]:
    """Every metric row of the evals, one line each: the base, then each trained model (its change in
    green when better, red when worse; `better` on the row says which direction that is)."""
    names: dict[str, MetricRow] = {}
    for t in evaluated:
        for row in t.rows:
            names.setdefault(row.name, row)
    head = "".join(f"<th>{_e(t.label)}</th>" for t in evaluated)
    out = [f"<h3>Summary</h3><table><tr><th>metric</th><th>n</th><th>better</th><th>base</th>{head}</tr>"]
    for name, first in names.items():
        cells = []
        for t in evaluated:
            row = find(t.rows, name)
            if row is None:
                cells.append("<td class=num>n/a</td>")
                continue
            colour = {True: "better", False: "worse"}.get(row.improved, "same")
            cells.append(f"<td class='num {colour}'>{_e(format_value(row.trained, row.unit))}</td>")
        out.append(f"<tr><td>{_e(first.label)}</td><td class=num>{_e(first.n or '')}</td><td>{_e(first.better)}</td>"
                   f"<td class=num>{_e(format_value(first.base, first.unit))}</td>{''.join(cells)}</tr>")
    wins = "".join(f"<td class=num>{_pct(t.eval['win_rate']['win'])} / {_pct(t.eval['win_rate']['tie'])} / "
                   f"{_pct(t.eval['win_rate']['loss'])}</td>" for t in evaluated)
    out.append(f"<tr><td>win / tie / loss vs base (held-out probes)</td><td></td><td></td><td></td>{wins}</tr>")
    out.append("</table>")
    return out


def _answers_table(t: Trained, per_kind: int = 6) -> list[str]:
    by_item: dict[str, dict] = {}
    for a in t.answers:
        by_item.setdefault(a["item"], {})[a["model"]] = a
    shown: dict[str, int] = {}
    rows = []
    for item, pair in by_item.items():
        if "base" not in pair or "trained" not in pair:
            continue
        kind = pair["base"]["kind"] + (f" ({pair['base']['attack']})" if pair["base"].get("attack") else "")
        if shown.get(kind, 0) >= per_kind:
            continue
        shown[kind] = shown.get(kind, 0) + 1
        conversation = "\n".join(f"{m['role']}: {m['content']}" for m in pair["base"]["messages"])
        rows.append(f"<tr><td>{_e(kind)}</td><td>{_e(conversation)}</td><td>{_e(pair['base']['text'])}</td>"
                    f"<td>{_e(pair['trained']['text'])}</td></tr>")
    if not rows:
        return []
    return [f"<h3>Answers side by side: {_e(t.name)}</h3>",
            "<table class=answers><tr><th>kind</th><th>prompt</th><th>base</th><th>trained</th></tr>",
            *rows, "</table>"]


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    from persona.store import write_atomic

    data = collect(run_dir)
    path = Path(out) if out else RunFolder(run_dir).report_file
    write_atomic(path, render(data))
    return path
