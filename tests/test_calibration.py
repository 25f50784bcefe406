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
