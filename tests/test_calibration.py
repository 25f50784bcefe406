"""Calibration matches each verdict to its labelled row by key, whatever order the judge answers in."""

from __future__ import annotations

from persona.calibration import calibrate, load_calibration_set
from persona.judges import Judgement

LABELS = {(row["prompt"], row["response"]): row["in_character"] for row in load_calibration_set()}


class PerfectJudgeOutOfOrder:
    """Knows every label; answers the last item of each batch first, as a judge that retried one reply does
    (the llm judge yields retried items after all the others)."""

    name = "perfect-out-of-order"
    fingerprint = "test"

    def judge(self, spec, items):
        items = list(items)
        for item in items[1:] + items[:1]:  # the first item "needed a retry": it comes back last
            good = LABELS[(item.prompt, item.response)]
            yield item, Judgement("ok", 9.0 if good else 1.0, {}, "knows the label")

    def close(self):
        pass


def test_a_perfect_judge_that_answers_out_of_order_scores_100_percent():
    report = calibrate(PerfectJudgeOutOfOrder())
    assert report.n == len(LABELS) == 48
    assert report.accuracy == 1.0 and report.kappa == 1.0 and report.mistakes == []


def test_every_target_of_the_shipped_identities_has_eight_hand_labels_half_kept():
    from collections import Counter

    from persona.spec import load_spec

    rows = load_calibration_set("calibration_targets.jsonl")
    for name in ("brand", "socratic-tutor", "aster"):
        counts = Counter((r["target"], r["kept"]) for r in rows if r["identity"] == name)
        for target in load_spec(f"identities/{name}.yaml").targets():
            assert counts[(target.id, True)] >= 4 and counts[(target.id, False)] >= 4, (name, target.id)


class TargetJudge:
    """Knows the per-target labels (a score for the target it is asked about) - or knows nothing (None)."""

    def __init__(self, knows: bool):
        self.name, self.fingerprint, self.knows = "target-test", "test", knows
        self.labels = {(r["identity"], r["prompt"], r["response"]): r for r in load_calibration_set("calibration_targets.jsonl")}

    def judge(self, spec, items):
        for item in items:
            row = self.labels[(spec.name, item.prompt, item.response)]
            score = (9.0 if row["kept"] else 1.0) if self.knows else None
            yield item, Judgement("ok", 5.0, {row["target"]: score}, "test")

    def close(self):
        pass


def test_per_target_calibration_separates_a_judge_that_sees_a_target_from_one_that_cannot():
    from persona.calibration import calibrate_targets, chance_p_value

    assert chance_p_value(8, 8) == 1 / 256 and chance_p_value(4, 8) > 0.5 and chance_p_value(0, 0) == 1.0
    knows = calibrate_targets(TargetJudge(True))
    assert knows["brand/warm"] == {"n": 8, "judged": 8, "correct": 8, "accuracy": 1.0, "p": 0.0039,
                                   "beats_chance": True}
    blind = calibrate_targets(TargetJudge(False))
    assert blind["brand/warm"]["judged"] == 0 and not blind["brand/warm"]["beats_chance"]


def test_the_rules_judge_per_target_is_measured_and_names_what_it_cannot_judge():
    from persona import display
    from persona.judges import load_judge

    report = calibrate(load_judge("rules"), with_targets=True)
    assert report.by_target["socratic-tutor/ends-with-question"]["beats_chance"]  # a code check that works
    assert report.by_target["brand/warm"]["judged"] == 0  # prose only: no score, never counted as kept
    table = display.calibration_table(report)
    assert "brand/warm" in table and "not judged: no score" in table and "targets better than chance" in table
