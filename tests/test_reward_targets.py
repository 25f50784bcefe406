"""The reward judge per target: pairs aimed at one target are asked about it (one model, one instruction per
target), training stores each target's held-out pairwise accuracy, and the judge scores only the targets it
beat chance on with enough held-out pairs - the rest stay None with the reason. A fake scorer here; the real
counterpart trains a reward model on the tiny model (test_trains_per_target_rows_and_stores_their_accuracy)."""

from __future__ import annotations

import json

import pytest

from persona.judges import JudgeItem, load_judge
from persona.judges.reward import (TARGET_COLUMN, TARGET_MIN_PAIRS, calibrate, for_target, refusal,
                                   target_instruction, with_target_rows)
from persona.spec import load_spec

BRAND = load_spec("identities/brand.yaml")
WARM = next(t for t in BRAND.targets() if t.id == "warm")


class KeywordScorer:
    """Rewards 'sorry' when asked about the warm trait, 'Nova' otherwise: a scorer that knows one target."""

    def rewards(self, pairs):
        out = []
        for prompt, response in pairs:
            text = response if isinstance(response, str) else response[0]["content"]
            asked = prompt[0]["content"] if isinstance(prompt, list) and prompt and prompt[0]["role"] == "system" else ""
            word = "sorry" if "'warm'" in asked else "Nova"
            out.append(1.0 if word in text else -1.0)
        return out

    def pairwise_accuracy(self, rows):
        from persona.judges.reward import RewardScorer

        return RewardScorer.pairwise_accuracy(self, rows)


def pair(i, target, chosen="I'm Nova. I'm sorry about the card.", rejected="Card blocked."):
    return {"id": f"p{i}", "prompt": [{"role": "system", "content": "You are Nova."},
                                       {"role": "user", "content": f"My card broke {i}"}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}], "rejected_target": target}


def test_pairs_aimed_at_a_target_are_asked_about_it_in_place_of_the_system_message():
    rows = with_target_rows([pair(0, "warm"), pair(1, None), pair(2, "not-in-the-spec")], BRAND)
    assert [r[TARGET_COLUMN] for r in rows] == [None, None, None, "warm"]
    aimed = rows[-1]
    assert aimed["id"] == "p0@warm"
    assert aimed["prompt"] == [{"role": "system", "content": target_instruction(WARM)},
                               {"role": "user", "content": "My card broke 0"}]
    assert target_instruction(WARM).startswith("Judge one point of the rubric only. Trait 'warm': ")
    assert for_target("Hi", WARM) == [{"role": "system", "content": target_instruction(WARM)},
                                      {"role": "user", "content": "Hi"}]


def test_calibration_per_target_and_the_judges_refusals():
    train = with_target_rows([pair(i, "warm") for i in range(4)], BRAND)
    held_out = with_target_rows([pair(10 + i, "warm") for i in range(TARGET_MIN_PAIRS)]
                                + [pair(20 + i, "brief") for i in range(TARGET_MIN_PAIRS)], BRAND)
    numbers = calibrate(KeywordScorer(), train, held_out)
    assert numbers["eval_pairs"] == 2 * TARGET_MIN_PAIRS and numbers["eval_pairwise_accuracy"] == 1.0
    warm, brief = numbers["targets"]["warm"], numbers["targets"]["brief"]
    assert (warm["train_pairs"], warm["eval_pairs"], warm["eval_pairwise_accuracy"]) == (4, TARGET_MIN_PAIRS, 1.0)
    assert warm["eval_p"] < 0.05 and refusal(warm) is None
    assert brief["train_pairs"] == 0 and refusal(brief) == "no training pair aimed at it"
    assert refusal({**warm, "eval_pairs": 3}) == f"3 held-out pairs aimed at it (needs {TARGET_MIN_PAIRS})"
    assert refusal({**warm, "eval_pairwise_accuracy": 0.5, "eval_p": 0.6}) == \
        f"chance on its held-out pairs (50% of {TARGET_MIN_PAIRS})"


@pytest.fixture
def reward_folder(tmp_path):
    (tmp_path / "persona_train.yaml").write_text("method: reward\n")
    targets = {"warm": {"centre": 0.0, "train_pairs": 4, "eval_pairs": 8, "eval_pairwise_accuracy": 1.0,
                        "eval_p": 0.0039},
               "brief": {"centre": 0.0, "train_pairs": 4, "eval_pairs": 2, "eval_pairwise_accuracy": 1.0,
                         "eval_p": 0.25}}
    (tmp_path / "reward.json").write_text(json.dumps({"centre": 0.0, "targets": targets}))
    return tmp_path


def test_the_judge_scores_only_the_targets_it_beat_chance_on_and_stores_their_accuracy(reward_folder):
    judge = load_judge(f"reward:{reward_folder}")
    judge._scorer = KeywordScorer()
    items = [JudgeItem("kind", "My card broke", "I'm so sorry, let's block it."),
             JudgeItem("cold", "My card broke", "Nova here. Blocked.")]
    verdicts = {item.key: v for item, v in judge.judge(BRAND, items)}
    assert verdicts["kind"].scores["warm"] > 5 > verdicts["cold"].scores["warm"]
    assert verdicts["cold"].overall > 5 > verdicts["kind"].overall  # the whole answer: a different question
    assert all(v is None for t, v in verdicts["kind"].scores.items() if t != "warm")
    raw = json.loads(verdicts["kind"].raw)
    assert raw["targets"]["warm"]["eval_pairwise_accuracy"] == 1.0 and raw["targets"]["warm"]["eval_pairs"] == 8
    assert raw["refused"]["brief"] == f"2 held-out pairs aimed at it (needs {TARGET_MIN_PAIRS})"
    assert raw["refused"]["identity"] == "no training pair aimed at it"
    assert "not judged: 13 of 14 targets" in verdicts["kind"].rationale


def test_build_writes_per_target_pairs_where_the_dpo_pairs_tie(tmp_path):
    """The rules judge cannot see 'warm': a violating answer aimed at it scores as high as the conforming one, so
    the DPO pairs drop it as a tie, while the reward dataset keeps it as a pair aimed at 'warm'; an answer aimed
    at the identity that the judge says kept it is dropped there too; no 'margin' column reaches TRL."""
    from dataclasses import replace

    from persona.dataset import build_datasets
    from persona.run import RunFolder
    from tests.test_train import response

    conforming = response("c", "p", "conforming", "I'm sorry to hear that - here's how to freeze it.")
    warm = replace(response("v1", "p", "violating", "Freeze it yourself."), target="warm", target_kind="trait")
    kept = response("v2", "p", "violating", "I'm Nova from Northwind Bank.")  # aimed at the identity, kept it
    scores = {t.id: None for t in BRAND.targets()}
    judgements = {"c": {"status": "ok", "overall": 10.0, "scores": {**scores, "identity": 10.0}},
                  "v1": {"status": "ok", "overall": 10.0, "scores": {**scores, "identity": 10.0}},
                  "v2": {"status": "ok", "overall": 10.0, "scores": {**scores, "identity": 10.0}}}
    report = build_datasets(BRAND, [conforming, warm, kept], judgements, RunFolder(tmp_path))
    assert report.pairs == {"train": 0, "eval": 0} and report.dropped["tie"] == 2
    assert report.reward["train"] == {"whole": 0, "targets": {"warm": 1}}
    [row] = [json.loads(line) for line in (tmp_path / "datasets" / "reward" / "train.jsonl").read_text().splitlines()]
    assert (row["judged_target"], row["chosen"][0]["content"], row["rejected"][0]["content"]) == (
        "warm", conforming.text, warm.text)
    assert "margin" not in row
    assert with_target_rows([row], BRAND)[0]["prompt"][0]["content"] == target_instruction(WARM)
