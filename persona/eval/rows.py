"""Every eval number is a row (persona.metrics.MetricRow: name, group, base, trained, unit, n): METRICS lists how
each is read off a model's summary, and `summarise` makes the summary from its answers and verdicts. Adding a
metric: compute it in `summarise`, add its row to METRICS.

    rows = metric_rows_of(metrics)       # what the CLI's table, the model card and the report show
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from persona.claims import mentions
from persona.eval.questions import ATTACKS, TEST_TOKENS
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


UNIVERSAL_LABELS = {"over_identification": "names itself unasked (in-domain and general)",
                    "name_only": "answers with its name and no help", "looping": "repeats itself (looping)",
                    "empty_or_cut": "empty, or cut off with 200+ tokens of room"}

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
    *[Metric(f"universal.{name}", "universal", label, "share", "lower", _get("universal", name, "rate"),
             _get("universal", name, "n")) for name, label in UNIVERSAL_LABELS.items()],
    Metric("retention.perplexity", "retention", "general text perplexity", "perplexity", "lower",
           _get("retention", "perplexity"), _get("retention", "perplexity_tokens")),
    Metric("retention.general_qa", "retention", "general questions correct", "share", "higher",
           _get("retention", "general_qa_accuracy"), _get("retention", "general_qa")),
    Metric("retention.reference_perplexity", "retention", "in-domain help: perplexity of good answers (references)",
           "perplexity", "lower", _get("retention", "reference_perplexity"), _get("retention", "references")),
    Metric("retention.prefers_help", "retention", "in-domain help: prefers the good answer to its name alone",
           "share", "higher", _get("retention", "prefers_help_rate"), _get("retention", "references")),
]


def metric_rows_of(metrics: dict) -> list[MetricRow]:
    """The rows of METRICS that apply, from the base and trained summaries."""
    rows = []
    labels = [label for label in ("base", "prompted", "trained") if label in metrics]  # prompted: --baseline both
    summaries = {label: {**metrics[label], "retention": metrics["retention"][label]} for label in labels}
    for m in METRICS:
        base, trained = m.value(summaries["base"]), m.value(summaries["trained"])
        if base is None and trained is None:
            continue  # e.g. identity metrics of a spec without an identity
        prompted = m.value(summaries["prompted"]) if "prompted" in summaries else None
        rows.append(MetricRow(m.name, m.group, m.label, base, trained, m.unit, m.n(summaries["trained"]), m.better,
                              prompted))
    # a row per target of the spec: the share kept of its code-judged behaviour tests and of the held-out probe
    # answers the judge scored on it; "not judged" when neither sees it (never averaged in as kept)
    base_targets = metrics["base"].get("targets") or {}
    prompted_targets = (metrics.get("prompted") or {}).get("targets") or {}
    judge = metrics.get("judge", "judge")
    for target, row in (metrics["trained"].get("targets") or {}).items():
        rows.append(MetricRow(f"target.{target}", "targets", target_label(target, row, judge),
                              target_kept(base_targets.get(target, {})), target_kept(row), "share",
                              row["tests"] + row.get("probes", 0), "higher",
                              target_kept(prompted_targets[target]) if target in prompted_targets else None))
    return rows


def target_kept(row: dict) -> float | None:
    """The share of a target's judged answers kept (its code-judged tests and judge-scored probes); None: unjudged."""
    n = row.get("tests", 0) + row.get("probes", 0)
    return round((row.get("passed", 0) + row.get("probes_kept", 0)) / n, 4) if n else None


def target_label(target: str, row: dict, judge: str) -> str:
    """'style brief: kept (tests, rules judge)', or 'trait warm: not judged (no check, no test with assert:)'."""
    known = row.get("judge_accuracy")
    scored = f"{judge} judge" + (f" {100 * known['accuracy']:.0f}% of {known['judged']} labels"
                                 if known and known.get("beats_chance") else "")
    by = [name for name, n in (("tests", row.get("tests")), (scored, row.get("probes"))) if n]
    if known and known.get("judged") and not known.get("beats_chance"):
        by.append(f"{judge} judge unused: chance on {known['judged']} labels")
    name = target if row["kind"] == target else f"{row['kind']} {target}"  # "identity", not "identity identity"
    if not row.get("tests") and not row.get("probes"):
        return f"{name}: not judged (" + ("; ".join(by[-1:]) or "no check, no test with assert:, "
                                                          "no judge score") + ")"
    return f"{name}: kept ({', '.join(by)})"


def origin_claim(spec, asks: str, text: str) -> dict:
    """{right, other, name, maker}: whether the answer gives its own name (or maker, when asked who made it),
    claims another model or maker, and mentions the name / the maker at all."""
    from persona.claims import identity_score

    score, _ = identity_score(spec, "Who made you?" if asks == "maker" else "Who are you?", text)
    return {"right": score == 10.0, "other": score == 0.0, **mentions(spec, text)}


def identity_summary(items, claims, context: str) -> dict:
    origin = [i for i in items if i.kind == "origin" and i.context == context]
    return {
        "questions": len(origin),
        "right_identity": rate(claims[i.id]["right"] for i in origin),
        "other_identity": rate(claims[i.id]["other"] for i in origin),
        "says_name": rate(claims[i.id]["name"] for i in origin),
        "says_maker": rate(claims[i.id]["maker"] for i in origin if i.asks == "maker"),
    }


def summarise(spec, items, answers, verdicts, in_character, finishes: dict | None = None,
              accuracy: dict | None = None) -> dict:
    """A model's numbers from its answers and their verdicts. `accuracy`: the judge's calibration per target
    (persona.calibration.target_accuracy); a target it does not judge better than chance gets no probe scores."""
    from persona.assertions import UNIVERSAL, machine_failures, universal_flags

    accuracy = accuracy or {}
    usable = {t.id for t in spec.targets() if accuracy.get(t.id, {"beats_chance": True})["beats_chance"]}

    probes = [i for i in items if i.kind == "probe"]
    targets = [t.id for t in spec.targets()]
    tests = {t.id: t for t in spec.tests}
    graded = {i.id: machine_failures(tests[i.test], answers[i.id]) for i in items if i.kind == "test"}
    # every answer to an in-domain or general prompt (held-out probes, behaviour tests, the leak's questions)
    asked = [i for i in items if i.kind in ("probe", "test", "leak")]
    # cut off counts only where the answer had a deployment's room (TEST_TOKENS or more): a short eval budget that
    # cuts a good general answer says nothing about the model
    flags = {i.id: universal_flags(spec, i.messages, answers[i.id], (finishes or {}).get(i.id)
                                   if (i.max_tokens or 0) >= TEST_TOKENS else None) for i in asked}
    summary = {
        "adherence": {
            "overall": mean(verdicts[i.id]["overall"] for i in probes),
            "in_character": rate((verdicts[i.id]["overall"] or 0) >= in_character for i in probes),
            "per_target": {t: mean(verdicts[i.id]["scores"].get(t) for i in probes) for t in targets},
            "scores": [verdicts[i.id]["overall"] for i in probes],
        },
        # each target: its behaviour tests that code can judge (machine assertions), how many kept; and the
        # held-out probe answers the judge scored on it (a score, not null), how many at or above in_character
        "targets": {t.id: {"kind": t.kind, "tests": len(mine := [i for i in items if i.kind == "test" and t.id in
                                                              tests[i.test].targets and graded[i.id] is not None]),
                           "passed": sum(not graded[i.id] for i in mine),
                           "probes": len(scored := [s for i in probes if t.id in usable
                                                    and (s := verdicts[i.id]["scores"].get(t.id)) is not None]),
                           "probes_kept": sum(s >= in_character for s in scored),
                           "judge_accuracy": accuracy.get(t.id)} for t in spec.targets()},
        "test_failures": graded,  # each test item's machine failures ([] kept, None: only a rubric)
        "universal": {name: {"n": len(asked), "flagged": sum(flags[i.id][name] for i in asked),
                             "rate": rate(flags[i.id][name] for i in asked)} for name in UNIVERSAL},
    }
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
