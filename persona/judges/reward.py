"""The `reward` judge: `--judge reward:PATH` scores responses with a reward model trained by
`persona train --method reward` (TRL's RewardTrainer on the run's pairs).

    judge = load_judge("reward:runs/aster/train-reward")
    scorer = RewardScorer(model, tokenizer)          # what training uses to report pairwise accuracy
    scorer.rewards([("Who are you?", "I'm Aster.")])  # -> [2.31]

A reward model gives one number per (prompt, response), on no fixed scale. Training stores a centre (the
midpoint of the mean chosen and mean rejected reward on the training pairs) beside the model; the judge maps
a reward r to 10 * sigmoid(r - centre), so 5 (IN_CHARACTER) sits at that midpoint.

Per target: a run's pairs whose rejected side was written to break one target (`violating: targeted`) are also
trained with that target as the judge's instruction (`target_instruction`, in place of the system message), so
the same model scores "does this answer keep target T?" when asked with T. Training stores, per target, its own
centre and its pairwise accuracy on the held-out split's pairs aimed at it; the judge scores a target only when
it had at least TARGET_MIN_PAIRS held-out pairs for it and beat chance on them (one-sided binomial p < 0.05), and
leaves every other target None (unchecked), saying which and why. Every verdict's `raw` carries the accuracy
behind each of its target scores.
"""

from __future__ import annotations

import json
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


TARGET_MIN_PAIRS = 6  # held-out pairs aimed at a target that the judge needs before it scores that target
TARGET_COLUMN = "judged_target"  # a training row asked about one target (None: the whole answer)


def target_instruction(target) -> str:
    """The system message a per-target row is asked with: the one point of the rubric to judge."""
    return f"Judge one point of the rubric only. {target.kind.capitalize()} '{target.id}': {target.description}"


def for_target(prompt, target) -> list[dict]:
    """`prompt` (text or chat messages) asked about `target`: its system message replaced by the instruction."""
    turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [
        m for m in prompt if m["role"] != "system"]
    return [{"role": "system", "content": target_instruction(target)}] + turns


def with_target_rows(rows: list[dict], spec) -> list[dict]:
    """A reward model's training rows, each target's asked about it. Rows from `persona build`'s reward dataset
    carry TARGET_COLUMN: those with a target of `spec` are asked about it, the others judge the whole answer (a
    target the spec no longer has is dropped). Plain preference pairs (a DPO dataset): each is kept as it is,
    plus a copy asked about its rejected side's target where that response was written to break one."""
    targets = {t.id: t for t in spec.targets()}
    if any(TARGET_COLUMN in r for r in rows):
        return [{**r, "prompt": for_target(r.get("prompt") or [], targets[r[TARGET_COLUMN]])} if r.get(TARGET_COLUMN)
                else r for r in rows if not r.get(TARGET_COLUMN) or r[TARGET_COLUMN] in targets]
    whole = [{**r, TARGET_COLUMN: None} for r in rows]
    aimed = [{**r, "prompt": for_target(r.get("prompt") or [], targets[r["rejected_target"]]),
              "id": f"{r.get('id', '')}@{r['rejected_target']}", TARGET_COLUMN: r["rejected_target"]}
             for r in rows if r.get("rejected_target") in targets]
    return whole + aimed


def calibrate(scorer: RewardScorer, train_rows, eval_rows) -> dict:
    """Numbers saved beside a reward model at the end of its training (TrainOutput.write_reward): the centre and
    pairwise accuracy of the whole-answer rows, and the same per target for rows asked about one target."""
    from persona.calibration import chance_p_value

    train_rows, eval_rows = list(train_rows), list(eval_rows)

    def numbers(train: list[dict], held_out: list[dict]) -> dict:
        chosen = scorer.rewards([(r.get("prompt", []), r["chosen"]) for r in train]) if train else []
        rejected = scorer.rewards([(r.get("prompt", []), r["rejected"]) for r in train]) if train else []
        centre = (sum(chosen) / len(chosen) + sum(rejected) / len(rejected)) / 2 if train else 0.0
        accuracy, n = scorer.pairwise_accuracy(held_out)
        return {"centre": centre, "train_pairwise_accuracy": sum(c > j for c, j in zip(chosen, rejected)) / len(train)
                if train else None, "train_pairs": len(train), "eval_pairwise_accuracy": None if n == 0 else accuracy,
                "eval_pairs": n, "eval_p": round(chance_p_value(round(accuracy * n), n), 4) if n else None}

    result = numbers([r for r in train_rows if not r.get(TARGET_COLUMN)],
                     [r for r in eval_rows if not r.get(TARGET_COLUMN)])
    aimed = sorted({r[TARGET_COLUMN] for r in train_rows + eval_rows if r.get(TARGET_COLUMN)})
    if aimed:
        result["targets"] = {t: numbers([r for r in train_rows if r.get(TARGET_COLUMN) == t],
                                        [r for r in eval_rows if r.get(TARGET_COLUMN) == t]) for t in aimed}
    return result


def refusal(numbers: dict | None) -> str | None:
    """Why the judge does not score a target with these training numbers, or None when it does."""
    from persona.calibration import BEATS_CHANCE

    if not numbers or not numbers.get("train_pairs"):
        return "no training pair aimed at it"
    if numbers.get("eval_pairs", 0) < TARGET_MIN_PAIRS:
        return f"{numbers.get('eval_pairs', 0)} held-out pairs aimed at it (needs {TARGET_MIN_PAIRS})"
    if numbers.get("eval_p") is None or numbers["eval_p"] >= BEATS_CHANCE:
        return (f"chance on its held-out pairs ({100 * (numbers.get('eval_pairwise_accuracy') or 0):.0f}% of "
                f"{numbers['eval_pairs']})")
    return None


class RewardJudge:
    cost = "loads the reward model"

    def __init__(self, path: str | None = None, batch_size: int = 8, every_target: bool = False):
        """`every_target`: score every target it has training pairs for, whatever its held-out pairs show - to
        measure it on a hand-labelled set (bench/learned_judge.py), never to label data."""
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
        numbers = self.output.reward() or {}
        self.centre = float(numbers.get("centre", 0.0))
        self.targets = numbers.get("targets") or {}  # target id -> its training numbers (calibrate)
        self.name = f"reward:{self.output.name}"
        self.fingerprint = (f"reward|{trained_fingerprint(self.output.path)}|{self.centre:.6f}|"
                            f"{json.dumps(self.targets, sort_keys=True)}")
        self.batch_size, self.every_target = batch_size, bool(every_target)
        if self.every_target:
            self.name += " (every target)"
            self.fingerprint += "|every"
        self._scorer: RewardScorer | None = None

    def _load(self) -> RewardScorer:
        if self._scorer is None:
            from persona.models import load_trained

            model, tokenizer = load_trained(self.output.path, "reward")
            self._scorer = RewardScorer(model, tokenizer, self.batch_size)
        return self._scorer

    def scored_targets(self, spec) -> tuple[list, dict[str, str]]:
        """(the targets of `spec` this model scores, {target id: why not} for the others)."""
        scored, refused = [], {}
        for t in spec.targets():
            why = refusal(self.targets.get(t.id))
            if self.every_target and why is not None and (self.targets.get(t.id) or {}).get("train_pairs"):
                why = None
            if why is None:
                scored.append(t)
            else:
                refused[t.id] = why
        return scored, refused

    def judge(self, spec, items: Sequence[JudgeItem]) -> Iterator[tuple[JudgeItem, Judgement]]:
        items = list(items)
        scorer = self._load()
        scored, refused = self.scored_targets(spec)
        for start in range(0, len(items), 64):
            chunk = items[start:start + 64]
            whole = scorer.rewards([(i.prompt, i.response) for i in chunk])
            per_target = {t.id: scorer.rewards([(for_target(i.prompt, t), i.response) for i in chunk])
                          for t in scored}
            for n, (item, reward) in enumerate(zip(chunk, whole)):
                overall = 10.0 / (1.0 + math.exp(-(reward - self.centre)))
                scores = {t.id: None for t in spec.targets()}
                working = {"reward": round(reward, 6), "centre": round(self.centre, 6), "targets": {}}
                for t in scored:
                    numbers, r = self.targets[t.id], per_target[t.id][n]
                    scores[t.id] = round(10.0 / (1.0 + math.exp(-(r - numbers["centre"]))), 3)
                    working["targets"][t.id] = {"reward": round(r, 6), "eval_pairwise_accuracy":
                                                numbers["eval_pairwise_accuracy"], "eval_pairs": numbers["eval_pairs"]}
                rationale = f"reward {reward:+.3f} (centre {self.centre:+.3f})"
                if refused:
                    rationale += f"; not judged: {len(refused)} of {len(scores)} targets (see `persona judge --calibrate`)"
                yield item, Judgement("ok", round(overall, 3), scores, rationale,
                                      json.dumps({**working, "refused": refused}, sort_keys=True))

    def close(self) -> None:
        self._scorer = None
