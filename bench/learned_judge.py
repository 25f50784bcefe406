"""Judges per target on persona's hand-labelled set (persona/data/calibration_targets.jsonl): the rules, the
offline likelihood-ratio judge, and a learned reward judge - on the prose-only targets (those no machine check
covers), which is where a learned judge has to earn its place.

    .venv/bin/python bench/learned_judge.py runs/brand-rm/train-reward [--identity brand]

For each prose-only target of the identity: each judge's accuracy on its hand labels (kept when its score there is
>= 5) and the one-sided binomial p against coin flips. The rules judge gives these targets no score; the offline
judge's likelihood ratio moves only its overall score, so it is read as the target's score; the reward judge is
shown as it scores in use (a target only where its own held-out pairs beat chance) and with every target it has
pairs for (`every_target`), to see what the gate hides. Prints a table; measures, changes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from persona.calibration import calibrate_targets, load_calibration_set  # noqa: E402
from persona.judges import Judgement, load_judge  # noqa: E402
from persona.spec import load_spec  # noqa: E402
from persona.templates import builtin_dir  # noqa: E402


class OverallAsTarget:
    """A judge whose overall score stands for every target's (the likelihood ratio has no per-target score)."""

    def __init__(self, judge):
        self.inner, self.name = judge, f"{judge.name} (overall)"

    def judge(self, spec, items):
        for item, v in self.inner.judge(spec, items):
            yield item, Judgement(v.status, v.overall, {t.id: v.overall for t in spec.targets()}, v.rationale, v.raw)


def prose_only(spec) -> list[str]:
    checked = {t for t, _ in spec.checks()} | {"identity"}
    return [t.id for t in spec.targets() if t.id not in checked]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reward", help="a reward model's folder (persona train --method reward)")
    parser.add_argument("--identity", default="brand")
    args = parser.parse_args()
    spec = load_spec(builtin_dir("identities") / f"{args.identity}.yaml")
    targets = prose_only(spec)
    rows = [r for r in load_calibration_set("calibration_targets.jsonl")
            if r["identity"] == args.identity and r["target"] in targets]
    judges = {"rules": load_judge("rules"), "offline (overall)": OverallAsTarget(load_judge("offline")),
              "reward (in use)": load_judge(f"reward:{args.reward}"),
              "reward (every target)": load_judge(f"reward:{args.reward}", every_target=True)}
    found = {name: calibrate_targets(judge, rows) for name, judge in judges.items()}
    width = max(len(t) for t in targets)
    print(f"{args.identity}: {len(targets)} prose-only targets, {len(rows)} hand labels "
          "(accuracy on the judged labels, binomial p; '-' = no score)")
    print(f"{'target':<{width}}  " + "  ".join(f"{name:>22}" for name in judges))
    for t in targets:
        cells = []
        for name in judges:
            n = found[name].get(f"{args.identity}/{t}") or {}
            cells.append("-" if not n.get("judged") else
                         f"{100 * n['accuracy']:.0f}% of {n['judged']} p={n['p']:.2f}" + (" *" if n["beats_chance"] else ""))
        print(f"{t:<{width}}  " + "  ".join(f"{c:>22}" for c in cells))
    for name in judges:
        judged = [v for k, v in found[name].items() if k.split("/")[1] in targets and v["judged"]]
        correct, n = sum(v["correct"] for v in judged), sum(v["judged"] for v in judged)
        beats = sum(v["beats_chance"] for v in judged)
        print(f"{name}: {correct}/{n} right on the prose-only labels it scored"
              + (f" ({100 * correct / n:.1f}%)" if n else "") + f"; better than chance on {beats} of {len(targets)}")
    print("* better than chance (one-sided binomial p < 0.05)")


if __name__ == "__main__":
    main()
