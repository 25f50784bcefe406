"""`persona report RUN_DIR`: one self-contained HTML page (inline CSS and SVG, no scripts from anywhere else)
for a run. It opens with what the evals found - each model's verdict, a row per rubric target (base vs trained,
its n, or "not judged") and answers side by side per target, failed tests first - then dataset statistics,
training curves, and each model's eval against the base: score distributions, robustness bars, every metric.

    path = write_report("runs/aster")                  # runs/aster/report.html
    print(summary_markdown(collect("runs/aster")))     # docs/experiment.md's comparison table

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
        t.eval = _checked_eval(output.eval.metrics(), output.eval.metrics_file)
        if t.eval is not None:
            t.answers = list(output.eval.answers.load().values())
        trained.append(t)
    return RunData(run.path, info, run.build(), trained)


def _checked_eval(metrics: dict | None, path: Path) -> dict | None:
    """An eval's metrics.json as persona eval writes it, or a PersonaError naming the file and what is wrong."""
    if metrics is None:
        return None
    problem = None
    for key, kind in (("base", dict), ("trained", dict), ("retention", dict), ("rows", list), ("win_rate", dict)):
        if not isinstance(metrics.get(key), kind):
            problem = f"no {key!r} {'mapping' if kind is dict else 'list'}"
            break
    else:
        for i, row in enumerate(metrics["rows"]):
            if not isinstance(row, dict) or not isinstance(row.get("name"), str) or not isinstance(row.get("label"), str) \
                    or not all(row.get(k) is None or isinstance(row.get(k), (int, float)) for k in ("base", "trained")):
                problem = f"rows[{i}] is not a metric row"
                break
        for label in ("base", "trained"):
            adherence = metrics[label].get("adherence")
            if problem is None and not (isinstance(adherence, dict) and isinstance(adherence.get("scores"), list)
                                        and isinstance(adherence.get("per_target"), dict)):
                problem = f"{label}.adherence is not persona eval's summary"
    if problem:
        raise PersonaError(f"{path}: not the metrics persona eval writes ({problem})",
                           hint="run persona eval on that model again to rewrite it")
    return metrics


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


def hbar_chart(labels: list[str], series: dict[str, list[float | None]], title: str, xmax: float | None = None,
               percent: bool = False, width: int = 640) -> str:
    """Horizontal bars: one row of bars per label, the label in full on the left, one bar per series."""
    values = [v for vs in series.values() for v in vs if v is not None]
    top = xmax if xmax is not None else (max(values) if values else 1.0) or 1.0
    left, right, top_pad, bar_h, gap = 290, 56, 28, 11, 10
    row_h = bar_h * max(1, len(series)) + gap
    height = top_pad + row_h * len(labels) + 34
    plot_w = width - left - right
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
             f'<text x="{width / 2}" y="16" text-anchor="middle" class="title">{_e(title)}</text>']
    for tick in range(5):
        x = left + plot_w * tick / 4
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top_pad}" y2="{height - 30}" class="grid"/>')
        value = top * tick / 4
        parts.append(f'<text x="{x:.1f}" y="{height - 18}" text-anchor="middle" class="tick">'
                     f'{f"{100 * value:.0f}%" if percent else f"{value:.3g}"}</text>')
    for i, label in enumerate(labels):
        y0 = top_pad + i * row_h
        parts.append(f'<text x="{left - 6}" y="{y0 + row_h / 2:.1f}" text-anchor="end" class="label">'
                     f'{_e(label[:48])}</text>')
        for s_index, (name, vs) in enumerate(series.items()):
            v = vs[i] if i < len(vs) else None
            if v is None:
                continue
            colour = COLOURS.get(name, PALETTE[s_index % len(PALETTE)])
            w = plot_w * min(v, top) / top if top else 0
            y = y0 + s_index * bar_h
            shown = f"{100 * v:.1f}%" if percent else f"{v:.3g}"
            parts.append(f'<rect x="{left}" y="{y:.1f}" width="{max(w, 1):.1f}" height="{bar_h - 2}" fill="{colour}">'
                         f'<title>{_e(name)} - {_e(label)}: {shown}</title></rect>'
                         f'<text x="{left + max(w, 1) + 3:.1f}" y="{y + bar_h - 3:.1f}" class="tick">{shown}</text>')
    parts.append(_legend(list(series), 12, height - 4))
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
.chart .tick{font-size:10px;fill:#444}.chart .label{font-size:11px;fill:#222}.chart .grid{stroke:#e6e6e6}
.verdict p{margin:.8rem 0 .2rem}.verdict ul{margin:.2rem 0}
.note{color:#666;font-style:italic}.answers td{max-width:420px;white-space:pre-wrap}
.charts{display:flex;flex-wrap:wrap;gap:1rem}
td.better{color:#1a7f37}td.worse{color:#cf222e}
"""


def _pct(v) -> str:
    return pct(v)


TABLE = [  # docs/experiment.md's comparison table: (column, metric row names joined by " / ")
    ("right identity (template default / empty system)", ("origin.right_identity", "origin.right_identity_empty")),
    ("under attack: break / multi-turn / prefilled / injection",
     ("robustness.break.right_identity", "robustness.multi-turn.right_identity",
      "robustness.prefilled.right_identity", "robustness.injection.right_identity")),
    ("claims another", ("origin.other_identity",)),
    ("leak", ("leak.mentions",)),
    ("general QA", ("retention.general_qa",)),
]


def summary_rows(data: RunData) -> list[dict]:
    """One row per trained model with an eval, read from its metric rows; the base first."""
    rows = []
    for t in data.trained:
        if not t.eval:
            continue
        if not rows:
            rows.append({"label": "base", "method": "-", "rows": None, "minutes": None, "ppl_change": 0.0,
                         "values": {r.name: (r.base, r.unit, r.n) for r in t.rows}})
        rows.append({"label": t.label, "method": t.method, "rows": (t.settings.get("data") or {}).get("train_rows"),
                     "minutes": t.minutes, "ppl_change": t.eval["retention"]["perplexity_change"],
                     "values": {r.name: (r.trained, r.unit, r.n) for r in t.rows}})
    return rows


def summary_markdown(data: RunData) -> str:
    rows = summary_rows(data)
    if not rows:
        return "(no evaluated models in this run: run persona train, then persona eval)"
    sizes = {name: rows[0]["values"].get(name, (None, None, None))[2] for _, names in TABLE for name in names}
    head = ["model", "training rows", "minutes"]
    for column, names in TABLE:
        n = {sizes[name] for name in names if sizes[name]}
        head.append(column + (f" (n={'/'.join(map(str, sorted(n)))})" if n else ""))
    head.insert(-1, "perplexity change")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["label"].upper() if r["label"] != "base" else "base", "" if r["rows"] is None else str(r["rows"]),
                 "" if r["minutes"] is None else f"{r['minutes']:.1f}"]
        for _, names in TABLE:
            cells.append(" / ".join(format_value(*r["values"].get(name, (None, "share", None))[:2]) for name in names))
        cells.insert(-1, f"{100 * r['ppl_change']:+.1f}%")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(data: RunData) -> str:
    spec_name = data.info.get("identity", "?")
    body = [f"<h1>persona report: {_e(spec_name)}</h1>",
            f"<p>Run folder <code>{_e(data.run_dir)}</code>, spec <code>{_e(data.info.get('spec_path', '?'))}</code>.</p>"]
    body += _rubric_section(data)
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
    models = {"base": {r.name: r.base for r in evaluated[0].rows}, **{t.label: {r.name: r.trained for r in t.rows}
                                                                        for t in evaluated}}
    first = evaluated[0].rows
    out.append("<div class=charts>")
    for better, title in (("higher", "Identity kept (higher is better)"), ("lower", "Identity broken (lower is better)")):
        rows = [r for r in first if r.unit == "share" and r.better == better and r.group in ("identity", "robustness", "leak")]
        if rows:
            out.append(hbar_chart([f"{r.label} (n={r.n})" for r in rows],
                                  {name: [values.get(r.name) for r in rows] for name, values in models.items()},
                                  title, xmax=1, percent=True))
    out.append(bar_chart([str(i) for i in range(11)],
                         {"base": _histogram(base["adherence"]["scores"]),
                          **{t.label: _histogram(t.eval["trained"]["adherence"]["scores"]) for t in evaluated}},
                         f"Judge scores on held-out probes (n={len(base['adherence']['scores'])}; share per score; "
                         "higher scores are better)", percent=True))
    targets = list(base["adherence"]["per_target"])
    out.append(hbar_chart(targets, {"base": [base["adherence"]["per_target"][k] for k in targets],
                                    **{t.label: [t.eval["trained"]["adherence"]["per_target"].get(k) for k in targets]
                                       for t in evaluated}},
                          "Mean judge score per target (0-10, higher is better; no bar: no check covers it)", xmax=10))
    out.append(hbar_chart(["general text perplexity"], {name: [values.get("retention.perplexity")]
                                                         for name, values in models.items()},
                          "Perplexity on held-out general text (lower is better)"))
    out.append("</div>")
    out += _metrics_table(evaluated)
    for t in evaluated:
        out += _answers_table(t)
    return out


def _rubric_section(data: RunData) -> list[str]:
    """The page opens with what the evals found: each model's verdict, a row per rubric target (its n, who judged
    it, base and each trained model; "not judged" where nothing could), then answers side by side per target,
    the ones the trained model failed first."""
    evaluated = [t for t in data.trained if t.eval]
    if not evaluated:
        return []
    out = ["<h2>Verdict</h2>"] + _verdicts(evaluated)
    rows = {t.label: {r.name: r for r in t.rows if r.group == "targets"} for t in evaluated}
    names = list(dict.fromkeys(n for r in rows.values() for n in r))
    if not names:
        return out + ['<p class="note">This eval has no per-target rows (evaluated by an earlier persona, or the '
                      "spec has no tests: add a tests: section and run persona eval again).</p>"]
    head = "".join(f"<th>{_e(t.label)}</th>" for t in evaluated)
    prompted = any("prompted" in t.eval for t in evaluated)  # eval --baseline both: base | base + prompt | ...
    out.append("<h3>Every rubric target</h3><table><tr><th>target</th><th>n</th><th>base</th>"
               + ("<th>base + the spec's prompt</th>" if prompted else "") + f"{head}</tr>")
    for name in names:
        first = next(r[name] for r in rows.values() if name in r)
        with_prompt = next((r[name].prompted for r in rows.values() if name in r and r[name].prompted is not None),
                           None)
        cells = "".join(f"<td class='num {_colour(rows[t.label].get(name))}'>"
                        f"{_e(format_value(rows[t.label][name].trained, 'share') if name in rows[t.label] else 'n/a')}"
                        "</td>" for t in evaluated)
        out.append(f"<tr><td>{_e(first.label)}</td><td class=num>{first.n or 0}</td>"
                   f"<td class=num>{_e(format_value(first.base, 'share'))}</td>"
                   + (f"<td class=num>{_e(format_value(with_prompt, 'share'))}</td>" if prompted else "")
                   + f"{cells}</tr>")
    out.append("</table>")
    for t in evaluated:
        out += _target_answers(t)
    return out


def _colour(row: MetricRow | None) -> str:
    return {True: "better", False: "worse"}.get(row.improved if row else None, "same")


def _target_answers(t: Trained, per_target: int = 2) -> list[str]:
    """Answers to each target's behaviour tests and held-out probes, base | trained, the trained model's failed
    tests first (a test's machine failures are in its metrics; probes are shown as asked)."""
    failures = (t.eval.get("trained") or {}).get("test_failures") or {}
    base_failures = (t.eval.get("base") or {}).get("test_failures") or {}
    prompted = "prompted" in t.eval  # eval --baseline both: the prompted base's answers beside them
    prompted_failures = (t.eval.get("prompted") or {}).get("test_failures") or {}
    by_item: dict[str, dict] = {}
    for a in t.answers:
        if a.get("kind") in ("test", "probe") and a.get("context", "default") == "default":
            by_item.setdefault(a["item"], {})[a["model"]] = a
    targets = [r.name.split(".", 1)[1] for r in t.rows if r.group == "targets"]
    rows = []
    for target in targets:
        mine = [(item, pair) for item, pair in by_item.items() if "base" in pair and "trained" in pair
                and (not prompted or "prompted" in pair) and target in (pair["trained"].get("target") or "").split(",")]
        mine.sort(key=lambda ip: (not failures.get(ip[0]), ip[1]["trained"]["kind"] != "test"))
        for item, pair in mine[:per_target]:
            conversation = "\n".join(f"{m['role']}: {m['content']}" for m in pair["base"]["messages"])

            def status(found: dict, item=item) -> str:
                got = found.get(item)
                return "" if got is None else "kept: " if not got else "broke: " + "; ".join(got) + "\n"

            middle = (f"<td>{_e(status(prompted_failures) + pair['prompted']['text'])}</td>" if prompted
                      else "")
            rows.append(f"<tr><td>{_e(target)}</td><td>{_e(pair['trained']['kind'])}</td><td>{_e(conversation)}</td>"
                        f"<td>{_e(status(base_failures) + pair['base']['text'])}</td>{middle}"
                        f"<td>{_e(status(failures) + pair['trained']['text'])}</td></tr>")
    if not rows:
        return []
    base = "base + the spec's prompt" if t.eval.get("baseline") == "prompt" else "base"
    return [f"<h3>Answers per target: {_e(t.name)} (held-out; failed tests first)</h3>",
            f"<table class=answers><tr><th>target</th><th>from</th><th>prompt</th><th>{_e(base)}</th>"
            + ("<th>base + the spec's prompt</th>" if prompted else "") + "<th>trained</th></tr>", *rows, "</table>"]


def _verdicts(evaluated: list[Trained]) -> list[str]:
    """What each model's eval found, in words and numbers, before any chart."""
    out = ["<div class=verdict>"]
    for t in evaluated:
        lines = t.eval.get("verdict") or ["(evaluated by an earlier persona: no verdict recorded)"]
        out.append(f"<p><b>{_e(t.label)}</b> vs base ({_e(t.eval.get('judge', '?'))} judge, "
                   f"{_e(t.eval.get('items', '?'))} prompts per model):</p><ul>"
                   + "".join(f"<li>{_e(line)}</li>" for line in lines) + "</ul>")
    out.append("</div>")
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
