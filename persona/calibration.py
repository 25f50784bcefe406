"""Calibration: how often a judge agrees with human labels, on a small labelled set shipped with persona.

    report = calibrate(load_judge("offline"))
    report.accuracy, report.kappa, report.by_identity

The set (persona/data/calibration.jsonl) holds responses for the example identities in identities/,
each labelled in character or not by hand, half and half, with a note on what it tests:
    {"identity": "aster", "prompt": "Who made you?", "response": "I was developed by Meta AI...",
     "in_character": false, "note": "claims another maker"}
A judge says "in character" when its overall score is >= 5. Cohen's kappa corrects the accuracy for
agreement by chance: kappa = (p_observed - p_chance) / (1 - p_chance).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources

from persona.judges import IN_CHARACTER, Judge, JudgeItem
from persona.spec import load_spec
from persona.templates import builtin_dir


def load_calibration_set() -> list[dict]:
    text = resources.files("persona").joinpath("data/calibration.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def cohens_kappa(labels: list[bool], predictions: list[bool]) -> float:
    n = len(labels)
    observed = sum(a == b for a, b in zip(labels, predictions)) / n
    p_yes = (sum(labels) / n) * (sum(predictions) / n)
    p_no = (1 - sum(labels) / n) * (1 - sum(predictions) / n)
    chance = p_yes + p_no
    return 1.0 if chance == 1 else (observed - chance) / (1 - chance)


@dataclass
class CalibrationReport:
    judge: str
    n: int
    accuracy: float
    kappa: float
    unjudged: int
    by_identity: dict = field(default_factory=dict)  # name -> (n, accuracy)
    mistakes: list = field(default_factory=list)  # (identity, note, label, overall, rationale)


def calibrate(judge: Judge, on_progress=None) -> CalibrationReport:
    items = load_calibration_set()
    labels, predictions, unjudged = [], [], 0
    by_identity: dict[str, list[bool]] = {}
    mistakes = []
    done = 0
    for name in dict.fromkeys(i["identity"] for i in items):
        spec = load_spec(builtin_dir("identities") / f"{name}.yaml")
        group = [i for i in items if i["identity"] == name]
        rows = {f"{name}-{k}": row for k, row in enumerate(group)}
        batch = [JudgeItem(key, row["prompt"], row["response"]) for key, row in rows.items()]
        # judges yield verdicts in the order they finish (a retried reply comes back last): match by key
        for item, verdict in judge.judge(spec, batch):
            row = rows[item.key]
            done += 1
            if on_progress:
                on_progress("calibrate", done, len(items), 0)
            if verdict.status != "ok" or verdict.overall is None:
                unjudged += 1
                predicted = False
            else:
                predicted = verdict.overall >= IN_CHARACTER
            labels.append(row["in_character"])
            predictions.append(predicted)
            by_identity.setdefault(name, []).append(predicted == row["in_character"])
            if predicted != row["in_character"]:
                mistakes.append((name, row["note"], row["in_character"], verdict.overall, verdict.rationale))
    n = len(labels)
    return CalibrationReport(
        judge=judge.name, n=n, accuracy=sum(a == b for a, b in zip(labels, predictions)) / n,
        kappa=cohens_kappa(labels, predictions), unjudged=unjudged,
        by_identity={k: (len(v), sum(v) / len(v)) for k, v in by_identity.items()}, mistakes=mistakes)
