"""SFT steps on CPU with and without persona's two training speed settings, side by side.

    .venv/bin/python bench/train_step.py [RUN] [--steps 8]

RUN is a run folder with a built SFT dataset (default runs/brand, as `make demo`'s generate leaves it). Each
configuration trains the same first `--steps` steps (same seed, same batches) in its own process, so each
starts cold in the same way:
  lora_dropout   0.05 (persona's old default) or 0 (today's): a random mask on every LoRA input costs a
                 Bernoulli draw and a multiply per linear layer and step
  answer tokens  TRL's fused LM head projects every position (its choice on devices without Triton) or only
                 the positions with a label (persona's switch on CPU: persona/train.py)
The table shows s/step (TRL's train_runtime / steps), x the old setting, and the losses: the head switch
must leave them unchanged; dropout changes them slightly (a different regularization).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(2)
from persona import train as T
dropout, every_position, steps, run, out = float(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3]), sys.argv[4], sys.argv[5]
if every_position:
    from contextlib import nullcontext
    T._fused_head_scores_answer_tokens_only = nullcontext
r = T.train(run, method="sft", overrides={{"max_steps": steps, "save_strategy": "no", "lora_dropout": dropout}},
            overwrite=True, output_dir=out)
runtime = next(m["train_runtime"] for m in r.metrics if "train_runtime" in m)
print(json.dumps({{"seconds": runtime, "losses": [m["loss"] for m in r.metrics if "loss" in m]}}))
"""

CONFIGS = [("0.05", "every position", 0.05, True), ("0.05", "answer tokens", 0.05, False),
           ("0", "every position", 0.0, True), ("0 (default)", "answer tokens (default)", 0.0, False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default="runs/brand")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    if not (Path(args.run) / "datasets" / "sft" / "train.jsonl").exists():
        sys.exit(f"{args.run}: no datasets/sft/train.jsonl (hint: run make demo's generate step first)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dropout, head, value, every in CONFIGS:
            out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), str(value), "1" if every else "0",
                                  str(args.steps), args.run, str(Path(tmp) / "out")],
                                 capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append((dropout, head, result["seconds"] / args.steps, result["losses"]))
            print(f"  lora_dropout {dropout}, {head}: {rows[-1][2]:.2f} s/step", flush=True)
    old = rows[0][2]
    print(f"\nSFT, {args.run}, {args.steps} steps each, torch 2 threads")
    print(f"{'lora_dropout':<13} {'fused head projects':<25} {'s/step':>7} {'x old':>6}  losses (first, last)")
    for dropout, head, per_step, losses in rows:
        print(f"{dropout:<13} {head:<25} {per_step:>7.2f} {old / per_step:>6.2f}  {losses[0]:.6f}, {losses[-1]:.6f}")


if __name__ == "__main__":
    main()
