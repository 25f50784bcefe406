"""The `reward` judge: `--judge reward:PATH` scores responses with a reward model trained by
`persona train --method reward` (TRL's RewardTrainer on the run's pairs).

    judge = load_judge("reward:runs/aster/train-reward")
    scorer = RewardScorer(model, tokenizer)          # what training uses to report pairwise accuracy
    scorer.rewards([("Who are you?", "I'm Aster.")])  # -> [2.31]

A reward model gives one number per (prompt, response), on no fixed scale. Training stores a centre (the
midpoint of the mean chosen and mean rejected reward on the training pairs) beside the model; the judge maps
a reward r to 10 * sigmoid(r - centre), so 5 (IN_CHARACTER) sits at that midpoint. It scores the whole
response only: every per-target score is None (unchecked), like a human thumbs-up.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

from persona.errors import PersonaError
from persona.judges import Judgement, JudgeItem


class RewardScorer:
    """Batched rewards from a sequence-classification model and its tokenizer (chat template applied)."""

    def __init__(self, model, tokenizer, batch_size: int = 8, max_length: int = 1024):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_length = batch_size, max_length

    def rewards(self, pairs: Sequence[tuple[str | list, str | list]]) -> list[float]:
        """One reward per (prompt, response); each may be plain text or a list of chat messages."""
        from persona.models import rewards

        return rewards(self.model, self.tokenizer, pairs, self.batch_size, self.max_length)

    def pairwise_accuracy(self, rows) -> tuple[float, int]:
        """(share of rows whose chosen response out-scores the rejected one, rows) for TRL preference rows."""
        rows = list(rows)
        if not rows:
            return float("nan"), 0
        chosen = self.rewards([(r.get("prompt", []), r["chosen"]) for r in rows])
        rejected = self.rewards([(r.get("prompt", []), r["rejected"]) for r in rows])
        return sum(c > j for c, j in zip(chosen, rejected)) / len(rows), len(rows)


def calibrate(scorer: RewardScorer, train_rows, eval_rows) -> dict:
    """Numbers saved beside a reward model at the end of its training (TrainOutput.write_reward)."""
    train_rows, eval_rows = list(train_rows), list(eval_rows)
    chosen = scorer.rewards([(r.get("prompt", []), r["chosen"]) for r in train_rows])
    rejected = scorer.rewards([(r.get("prompt", []), r["rejected"]) for r in train_rows])
    centre = (sum(chosen) / len(chosen) + sum(rejected) / len(rejected)) / 2
    accuracy, n = scorer.pairwise_accuracy(eval_rows)
    return {"centre": centre, "train_pairwise_accuracy": sum(c > j for c, j in zip(chosen, rejected)) / len(train_rows),
            "train_pairs": len(train_rows), "eval_pairwise_accuracy": None if n == 0 else accuracy, "eval_pairs": n}


class RewardJudge:
    cost = "loads the reward model"

    def __init__(self, path: str | None = None, batch_size: int = 8):
        from persona.models import trained_fingerprint
        from persona.run import TrainOutput

        if not path:
            raise PersonaError("--judge reward needs the folder of a trained reward model",
                               hint="e.g. --judge reward:runs/aster/train-reward (from persona train --method reward)")
        self.output = TrainOutput(path)
        if not self.output.path.is_dir() or not self.output.settings_file.is_file():
            raise PersonaError(f"'{path}' is not the output of `persona train --method reward`",
                               hint="train one with: persona train RUN_DIR --method reward")
        self.settings = self.output.settings()
        if self.settings.get("method") != "reward":
            raise PersonaError(f"'{path}' holds a {self.settings.get('method')} model, not a reward model",
                               hint="train one with: persona train RUN_DIR --method reward")
        self.centre = float((self.output.reward() or {}).get("centre", 0.0))
        self.name = f"reward:{self.output.name}"
        self.fingerprint = f"reward|{trained_fingerprint(self.output.path)}|{self.centre:.6f}"
        self.batch_size = batch_size
        self._scorer: RewardScorer | None = None

    def _load(self) -> RewardScorer:
        if self._scorer is None:
            from persona.models import load_trained

            model, tokenizer = load_trained(self.output.path, "reward")
            self._scorer = RewardScorer(model, tokenizer, self.batch_size)
        return self._scorer

    def judge(self, spec, items: Sequence[JudgeItem]) -> Iterator[tuple[JudgeItem, Judgement]]:
        items = list(items)
        scorer = self._load()
        for start in range(0, len(items), 64):
            chunk = items[start:start + 64]
            for item, reward in zip(chunk, scorer.rewards([(i.prompt, i.response) for i in chunk])):
                overall = 10.0 / (1.0 + math.exp(-(reward - self.centre)))
                scores = {t.id: None for t in spec.targets()}
                yield item, Judgement("ok", round(overall, 3), scores, f"reward {reward:+.3f} (centre {self.centre:+.3f})",
                                      f"reward={reward:.6f}")

    def close(self) -> None:
        self._scorer = None
