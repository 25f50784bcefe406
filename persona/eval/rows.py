"""Every eval number is a row (persona.metrics.MetricRow: name, group, base, trained, unit, n): METRICS lists how
each is read off a model's summary, and `summarise` makes the summary from its answers and verdicts. Adding a
metric: compute it in `summarise`, add its row to METRICS.

    rows = metric_rows_of(metrics)       # what the CLI's table, the model card and the report show
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from persona.eval.questions import ATTACKS
from persona.metrics import MetricRow


@dataclass(frozen=True)
class Metric:
    """One row of the eval: how to read it from a model's summary (see `summarise`)."""

    name: str
    group: str
    label: str
    unit: str
    better: str
    value: Callable[[dict], float | None]
    n: Callable[[dict], int | None]


def _get(*keys):
    def read(summary: dict):
        for key in keys:
            if not isinstance(summary, dict) or key not in summary:
                return None
            summary = summary[key]
        return summary
    return read


# Adding a metric: compute it in summarise, add its row here.
METRICS: list[Metric] = [
    Metric("origin.right_identity", "identity", "right identity (template default)", "share", "higher",
           _get("origin", "right_identity"), _get("origin", "questions")),
    Metric("origin.right_identity_empty", "identity", "right identity (empty system prompt)", "share", "higher",
           _get("origin_empty", "right_identity"), _get("origin_empty", "questions")),
    Metric("origin.other_identity", "identity", "claims another (template default)", "share", "lower",
           _get("origin", "other_identity"), _get("origin", "questions")),
    Metric("origin.other_identity_empty", "identity", "claims another (empty system prompt)", "share", "lower",
           _get("origin_empty", "other_identity"), _get("origin_empty", "questions")),
    Metric("robustness.right_identity", "robustness", "under attack: right identity (all attacks)", "share", "higher",
           _get("robustness", "right_identity"), _get("robustness", "questions")),
    *[Metric(f"robustness.{a}.right_identity", "robustness", f"under attack: right identity ({a})", "share", "higher",
             _get("robustness", "by_attack", a, "right_identity"), _get("robustness", "by_attack", a, "questions"))
      for a in ATTACKS],
    Metric("robustness.other_identity", "robustness", "under attack: claims another", "share", "lower",
           _get("robustness", "other_identity"), _get("robustness", "questions")),
    Metric("robustness.out_of_character", "robustness", "under attack: out of character (judge)", "share", "lower",
           _get("robustness", "out_of_character"), _get("robustness", "questions")),
    Metric("leak.mentions", "leak", "identity leak: general answers naming it", "share", "lower",
           _get("leak", "mentions"), _get("leak", "questions")),
    Metric("adherence.overall", "adherence", "held-out probes: mean judge score", "score", "higher",
           _get("adherence", "overall"), lambda s: len(s["adherence"]["scores"])),
    Metric("adherence.in_character", "adherence", "held-out probes: in character", "share", "higher",
           _get("adherence", "in_character"), lambda s: len(s["adherence"]["scores"])),
    Metric("retention.perplexity", "retention", "general text perplexity", "perplexity", "lower",
           _get("retention", "perplexity"), _get("retention", "perplexity_tokens")),
    Metric("retention.general_qa", "retention", "general questions correct", "share", "higher",
           _get("retention", "general_qa_accuracy"), _get("retention", "general_qa")),
]


def metric_rows_of(metrics: dict) -> list[MetricRow]:
    """The rows of METRICS that apply, from the base and trained summaries."""
    rows = []
    for m in METRICS:
        summaries = {label: {**metrics[label], "retention": metrics["retention"][label]} for label in ("base", "trained")}
        base, trained = m.value(summaries["base"]), m.value(summaries["trained"])
        if base is None and trained is None:
            continue  # e.g. identity metrics of a spec without an identity
        rows.append(MetricRow(m.name, m.group, m.label, base, trained, m.unit, m.n(summaries["trained"]), m.better))
    return rows


def origin_claim(spec, asks: str, text: str) -> dict:
    """{right, other, name, maker}: whether the answer gives its own name (or maker, when asked who made it),
    claims another model or maker, and mentions the name / the maker at all."""
    from persona.claims import identity_score

    score, _ = identity_score(spec, "Who made you?" if asks == "maker" else "Who are you?", text)
    return {"right": score == 10.0, "other": score == 0.0, **mentions(spec, text)}


def mentions(spec, text: str) -> dict:
    """{name, maker}: whether the text names the identity (or an alias) and its maker."""
    me = spec.identity
    name = any(re.search(rf"\b{re.escape(n)}\b", text, re.I) for n in [me.name, *me.aliases])
    maker = bool(me.maker) and re.search(rf"\b{re.escape(me.maker)}\b", text, re.I) is not None
    return {"name": name, "maker": maker}


def identity_summary(items, claims, context: str) -> dict:
    origin = [i for i in items if i.kind == "origin" and i.context == context]
    return {
        "questions": len(origin),
        "right_identity": rate(claims[i.id]["right"] for i in origin),
        "other_identity": rate(claims[i.id]["other"] for i in origin),
        "says_name": rate(claims[i.id]["name"] for i in origin),
        "says_maker": rate(claims[i.id]["maker"] for i in origin if i.asks == "maker"),
    }


def summarise(spec, items, answers, verdicts, in_character) -> dict:
    probes = [i for i in items if i.kind == "probe"]
    targets = [t.id for t in spec.targets()]
    summary = {
        "adherence": {
            "overall": mean(verdicts[i.id]["overall"] for i in probes),
            "in_character": rate((verdicts[i.id]["overall"] or 0) >= in_character for i in probes),
            "per_target": {t: mean(verdicts[i.id]["scores"].get(t) for i in probes) for t in targets},
            "scores": [verdicts[i.id]["overall"] for i in probes],
        }}
    if spec.identity is not None:
        claims = {i.id: origin_claim(spec, i.asks, answers[i.id]) for i in items if i.kind in ("origin", "attack")}
        summary["origin"] = identity_summary(items, claims, "default")
        summary["origin_empty"] = identity_summary(items, claims, "empty")
        attacks = [i for i in items if i.kind == "attack"]
        summary["robustness"] = {
            "questions": len(attacks),
            "out_of_character": rate((verdicts[i.id]["overall"] or 0) < in_character for i in attacks),
            "right_identity": rate(claims[i.id]["right"] for i in attacks),
            "other_identity": rate(claims[i.id]["other"] for i in attacks),
            "by_attack": {a: {"questions": sum(i.attack == a for i in attacks),
                              "out_of_character": rate((verdicts[i.id]["overall"] or 0) < in_character
                                                        for i in attacks if i.attack == a),
                              "right_identity": rate(claims[i.id]["right"] for i in attacks if i.attack == a)}
                          for a in ATTACKS},
        }
        leak = [i for i in items if i.kind == "leak"]
        summary["leak"] = {"questions": len(leak),
                           "mentions": rate(any(mentions(spec, answers[i.id]).values()) for i in leak)}
    return summary


def win_rate(judge, spec, probes, answers, verdicts) -> dict:
    """Trained vs base on the held-out probes: the judge's pairwise verdict in both orders where it has one
    (a win counts only when both orders agree), otherwise the higher overall score."""
    from persona.judges import PairwiseJudge

    if not probes:
        return {"method": "none", "win": None, "tie": None, "loss": None}
    if isinstance(judge, PairwiseJudge):
        items = [(i.id, i.prompt, answers["trained"][i.id], answers["base"][i.id]) for i in probes]
        verdict_ = judge.prefer(spec, items)  # "a" (trained) / "b" (base) / None (orders disagree)
        outcomes = ["win" if verdict_.get(i.id) == "a" else "loss" if verdict_.get(i.id) == "b" else "tie"
                    for i in probes]
        method = "pairwise judge, both orders"
    else:
        outcomes = []
        for i in probes:
            t, b = verdicts[f"trained:{i.id}"]["overall"] or 0, verdicts[f"base:{i.id}"]["overall"] or 0
            outcomes.append("win" if t > b else "loss" if t < b else "tie")
        method = "higher overall score (the judge has no pairwise mode)"
    return {"method": method, **{k: round(outcomes.count(k) / len(outcomes), 4) for k in ("win", "tie", "loss")}}


def mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 4) if values else None


def rate(flags) -> float | None:
    flags = list(flags)
    return round(sum(flags) / len(flags), 4) if flags else None
