"""One small persona run end to end, timed stage by stage, so the next bottleneck is visible.

    .venv/bin/python bench/pipeline.py [--spec identities/aster.yaml] [--limit 8] [--judge rules]

Runs in a temporary folder on the embedded default model: generate (prompts, responses, judging, building
the datasets), SFT training (one epoch, LoRA), eval (base vs trained, then a second eval of the same model to
show what the cached base answers save), and prints each stage's seconds and share of the whole. Run it on
a quiet machine; the shares, not the seconds, carry over to other machines.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="identities/aster.yaml")
    parser.add_argument("--limit", type=int, default=8, help="probe prompts")
    parser.add_argument("--replay", type=int, default=16)
    parser.add_argument("--judge", default="rules")
    args = parser.parse_args()
    import torch

    import persona

    spec = persona.load_spec(args.spec)
    stages: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        config = persona.RunConfig(out=str(run), limit=args.limit, k=2, prompts_per_target=1, replay=args.replay,
                                   max_tokens=96, violating="plain")
        started = time.perf_counter()
        summary = persona.generate(spec, config, judge=args.judge)
        generated = time.perf_counter() - started
        notes = {"prompts": f"{summary.prompts_train + summary.prompts_eval} probe prompts",
                 "responses": f"{summary.responses} responses, {summary.tokens} tokens",
                 "judging": f"{args.judge} judge", "building": "datasets"}
        for name, seconds in summary.stage_seconds.items():
            stages.append((f"generate: {name}", seconds, notes.get(name, "")))
        rest = generated - sum(summary.stage_seconds.values())
        stages.append(("generate: other (spec, run folder)", rest, ""))
        started = time.perf_counter()
        result = persona.train_model(run, "sft", overrides={"num_train_epochs": 1})
        speed = f", {result.tokens_per_second:.0f} tokens/s" if result.tokens_per_second else ""
        stages.append(("train: sft (LoRA, 1 epoch)", time.perf_counter() - started,
                       f"{len([m for m in result.metrics if 'loss' in m])} steps{speed}"))
        settings = persona.EvalSettings(limit=args.limit)
        for label in ("eval: first (base + trained)", "eval: again (base cached)"):
            started = time.perf_counter()
            metrics = persona.evaluate(result.output_dir, args.spec, settings=settings)
            work = metrics["work"]
            stages.append((label, time.perf_counter() - started, f"{metrics['items']} prompts per model; base: "
                           f"{work['base_generations']} generations, {work['base_scoring_passes']} scoring passes"))
    total = sum(s for _, s, _ in stages)
    print(f"persona pipeline on {args.spec} (--limit {args.limit}, replay {args.replay}), embedded model, "
          f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    print(f"{'stage':<38} {'seconds':>8} {'share':>6}  notes")
    for name, seconds, note in stages:
        print(f"{name:<38} {seconds:>8.1f} {seconds / total:>6.1%}  {note}")
    print(f"{'total':<38} {total:>8.1f} {1:>6.0%}")


if __name__ == "__main__":
    main()
