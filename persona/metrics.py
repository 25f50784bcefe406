"""Eval results as rows: one record per metric, base vs trained, that the CLI, the model card and the report
all read (persona.eval computes them; nothing else reads the nested numbers by name).

    {"name": "origin.right_identity", "group": "origin", "label": "right identity", "base": 0.0,
     "trained": 0.958, "unit": "share", "n": 24, "better": "higher"}

    rows = metric_rows(json.loads(Path("runs/aster/train-dpo/eval/metrics.json").read_text()))
    row = find(rows, "origin.right_identity")
    f"{row.label}: {format_value(row.base, row.unit)} -> {format_value(row.trained, row.unit)}"

Units: "share" (0-1, shown as a percentage), "score" (a judge's 0-10), "perplexity", "change" (a relative
change, shown as +2.0%). `better` says which direction is good, so charts never mix "higher is better" with
"higher is worse".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class MetricRow:
    name: str  # "group.metric", unique in an eval
    group: str  # adherence | origin | robustness | leak | targets | universal | retention
    label: str  # what it measures, in words
    base: float | None
    trained: float | None
    unit: str  # share | score | perplexity | change
    n: int | None = None  # sample size (questions, prompts, tokens) behind the number
    better: str = "higher"  # higher | lower
    prompted: float | None = None  # the base model given the spec's deployment prompt (eval --baseline both)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MetricRow":
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})

    @property
    def delta(self) -> float | None:
        return None if self.base is None or self.trained is None else self.trained - self.base

    @property
    def improved(self) -> bool | None:
        """Whether the trained model is better than the base on this metric (None when either is missing or
        the two are equal: unchanged is neither better nor worse)."""
        if self.delta is None or self.delta == 0:
            return None
        return self.delta > 0 if self.better == "higher" else self.delta < 0


def pct(value: float | None, digits: int = 1) -> str:
    """0.9583 -> '95.8%'; None -> 'n/a'. The one percentage formatter."""
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "share":
        return pct(value)
    if unit == "change":
        return f"{100 * value:+.1f}%"
    if unit == "perplexity":
        return f"{value:.2f}"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def metric_rows(metrics: dict) -> list[MetricRow]:
    """The rows of an eval's metrics.json."""
    return [MetricRow.from_dict(r) for r in metrics.get("rows", [])]


def find(rows: list[MetricRow], name: str) -> MetricRow | None:
    return next((r for r in rows if r.name == name), None)


def verdict(rows: list[MetricRow], judge: str, reference_change: dict | None = None) -> list[str]:
    """What changed, in words and numbers, most important first; it says so when nothing did.

        ["right identity 0.0% -> 95.8% on 24 held-out questions (template default); 0.0% -> 91.7% with an
          empty system prompt", "under attack: right identity 0.0% -> 93.8% on 96 (lowest: prefilled 87.5%)", ...]
    """
    def change(row: MetricRow | None) -> str:
        return f"{format_value(row.base, row.unit)} -> {format_value(row.trained, row.unit)}"

    lines = []
    right, empty = find(rows, "origin.right_identity"), find(rows, "origin.right_identity_empty")
    if right:
        lines.append(f"right identity {change(right)} on {right.n} held-out questions (template default)"
                     + (f"; {change(empty)} with an empty system prompt" if empty else ""))
    attacked = find(rows, "robustness.right_identity")
    if attacked:
        per_attack = [r for r in rows if r.name.startswith("robustness.") and r.name.count(".") == 2]
        worst = min(per_attack, key=lambda r: r.trained if r.trained is not None else 1.0, default=None)
        lines.append(f"under attack: right identity {change(attacked)} on {attacked.n}"
                     + (f" (lowest: {worst.label.split('(')[-1].rstrip(')')} {format_value(worst.trained, worst.unit)})"
                        if worst else ""))
    other, leak = find(rows, "origin.other_identity"), find(rows, "leak.mentions")
    if other:
        lines.append(f"claims another identity {change(other)}"
                     + (f"; names itself in answers to general questions {change(leak)} of {leak.n}" if leak else ""))
    adherence = find(rows, "adherence.in_character")
    if adherence:
        targets = [r for r in rows if r.group == "targets"]
        seen = sum("judge" in r.label.split("kept (", 1)[-1] and "unused" not in r.label for r in targets)
        lines.append(f"held-out probes in character ({judge} judge) {change(adherence)} of {adherence.n}"
                     + (f" - the {judge} judge sees {seen} of {len(targets)} targets; the rest count as kept there"
                        if targets and seen < len(targets) else ""))
    ppl, qa = find(rows, "retention.perplexity"), find(rows, "retention.general_qa")
    if ppl and ppl.base:
        lines.append(f"perplexity {100 * (ppl.trained - ppl.base) / ppl.base:+.1f}% ({change(ppl)})"
                     + (f"; general questions {change(qa)} of {qa.n}" if qa else ""))
    help_ = find(rows, "retention.reference_perplexity")
    if help_ and help_.base:
        noise = reference_change or {}
        lines.append(f"in-domain help: perplexity of {help_.n} good answers (the spec's references) "
                     f"{100 * (help_.trained - help_.base) / help_.base:+.1f}% ({change(help_)})"
                     + (f", 95% interval over the answers {100 * noise['low']:+.1f}% to {100 * noise['high']:+.1f}%"
                        if noise else ""))
    choice = find(rows, "retention.prefers_help")
    if choice:
        lines.append(f"in-domain help, forced choice: prefers the good answer to its name alone {change(choice)} of "
                     f"{choice.n}")
    targets = [r for r in rows if r.group == "targets"]
    if targets:
        judged = [r for r in targets if r.n]
        better = [r for r in judged if r.improved]
        worse = [r for r in judged if r.improved is False]
        unjudged = [r.name.split(".", 1)[1] for r in targets if not r.n]
        lines.insert(0, f"rubric targets: {len(judged)} of {len(targets)} judged (behaviour tests by code, held-out "
                        f"probes by the {judge} judge's scores; {sum(r.n >= 8 for r in judged)} with n >= 8); trained "
                        f"better on {len(better)}, worse on {len(worse)}, the same on {len(judged) - len(better) - len(worse)}"
                     + (f" (worse: {', '.join(r.name.split('.', 1)[1] for r in worse)})" if worse else "")
                     + (f"; not judged: {', '.join(unjudged)}" if unjudged else ""))
    flagged = [r for r in rows if r.group == "universal" and r.trained]
    if flagged:
        lines.append("universal checks on in-domain and general answers (trained): "
                     + ", ".join(f"{r.label} {format_value(r.trained, r.unit)} (base {format_value(r.base, r.unit)})"
                                 for r in flagged) + f" of {flagged[0].n}")
    measured = [r for r in rows if r.group != "retention" and not (r.base is None and r.trained is None)]
    if measured and all(r.delta is not None and abs(r.delta) < 1e-9 for r in measured):
        lines.insert(0, "no change: the trained model answers the eval's questions exactly as well as the base")
    return lines
