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
    group: str  # adherence | origin | robustness | leak | retention
    label: str  # what it measures, in words
    base: float | None
    trained: float | None
    unit: str  # share | score | perplexity | change
    n: int | None = None  # sample size (questions, prompts, tokens) behind the number
    better: str = "higher"  # higher | lower

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
        """Whether the trained model is better than the base on this metric (None when either is missing)."""
        if self.delta is None:
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
