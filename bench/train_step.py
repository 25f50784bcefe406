"""SFT steps on CPU with and without persona's training speed settings, in fp32 and bf16, side by side.

    .venv/bin/python bench/train_step.py [RUN] [--steps 8] [--configs all|dtype]

RUN is a run folder with a built SFT dataset (default runs/brand, as `make demo`'s generate leaves it). Each
configuration trains the same first `--steps` steps (same seed, same batches) in its own process, so each
starts cold in the same way:
  lora_dropout   0.05 (persona's old default) or 0 (today's): a random mask on every LoRA input costs a
                 Bernoulli draw and a multiply per linear layer and step
  answer tokens  TRL's fused LM head projects every position (its choice on devices without Triton) or only
                 the positions with a label (persona's switch on CPU: persona/train.py)
  dtype          float32, or bf16 autocast (TRL's bf16=True; LoRA weights and optimizer state stay fp32),
                 forced with `dtype`, whatever persona.precision would pick (the header says which it picks)
The table shows s/step (TRL's train_runtime / steps), trained tokens/s, x the old setting, x fp32 (the same
settings in fp32), the share of the matmul peak of its dtype (both peaks timed in this run; a LoRA step counted
as 4 x the non-embedding parameters in FLOPs per token: the forward's multiply-adds and the backward's
activation gradients, the frozen weights get none; the LM head runs on answer tokens only and is left out, so
this is a lower bound), and the losses: the head switch must leave them unchanged; dropout changes them
slightly (a different regularization), bf16 within its rounding. `--configs dtype` runs only today's settings
in both dtypes.
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
dtype = sys.argv[6]
if every_position:
    from contextlib import nullcontext
    T._fused_head_scores_answer_tokens_only = nullcontext
r = T.train(run, method="sft", overrides={{"max_steps": steps, "save_strategy": "no", "lora_dropout": dropout,
                                           "dtype": dtype}}, overwrite=True, output_dir=out)
runtime = next(m["train_runtime"] for m in r.metrics if "train_runtime" in m)
print(json.dumps({{"seconds": runtime, "tokens": r.tokens, "losses": [m["loss"] for m in r.metrics if "loss" in m]}}))
"""

# (lora_dropout, fused head projects, dropout value, every position, dtype)
CONFIGS = [("0.05", "every position", 0.05, True, "float32"), ("0.05", "answer tokens", 0.05, False, "float32"),
           ("0", "every position", 0.0, True, "float32"), ("0 (default)", "answer tokens (default)", 0.0, False, "float32"),
           ("0 (default)", "answer tokens (default)", 0.0, False, "bfloat16")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default="runs/brand")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--configs", choices=("all", "dtype"), default="all")
    args = parser.parse_args()
    if not (Path(args.run) / "datasets" / "sft" / "train.jsonl").exists():
        sys.exit(f"{args.run}: no datasets/sft/train.jsonl (hint: run make demo's generate step first)")
    sys.path.insert(0, str(ROOT))
    from hf_batching import matmul_peak  # noqa: E402  (bench/ is this script's folder)

    from persona.precision import compute_dtype, describe

    configs = CONFIGS if args.configs == "all" else CONFIGS[-2:]
    peaks = {d: matmul_peak(d) for d in ("float32", "bfloat16")}
    parameters = 134_515_008 - 49_152 * 576  # SmolLM2-135M-Instruct less its (tied) embedding matrix
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dropout, head, value, every, dtype in configs:
            out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), str(value), "1" if every else "0",
                                  str(args.steps), args.run, str(Path(tmp) / "out"), dtype],
                                 capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append((dropout, head, dtype, result["seconds"] / args.steps, result["tokens"] / result["seconds"],
                         result["losses"]))
            print(f"  lora_dropout {dropout}, {head}, {dtype}: {rows[-1][3]:.2f} s/step, {rows[-1][4]:.0f} tokens/s",
                  flush=True)
    old = rows[0][3]
    fp32 = {(d, h): per_step for d, h, dtype, per_step, _, _ in rows if dtype == "float32"}
    print(f"\nSFT, {args.run}, {args.steps} steps each, torch 2 threads; matmul peaks (2048 x 2048, this run): fp32 "
          f"{peaks['float32'] / 1e9:.1f} GFLOP/s, bf16 {peaks['bfloat16'] / 1e9:.1f} GFLOP/s "
          f"({peaks['bfloat16'] / peaks['float32']:.2f}x); persona picks {describe('cpu', compute_dtype('cpu'))}")
    print(f"{'lora_dropout':<13} {'fused head projects':<25} {'dtype':<9} {'s/step':>7} {'tokens/s':>9} {'x old':>6} "
          f"{'x fp32':>7} {'of peak':>8}  losses (first, last)")
    for dropout, head, dtype, per_step, rate, losses in rows:
        versus = f"{fp32[dropout, head] / per_step:>7.2f}" if (dropout, head) in fp32 else f"{'-':>7}"
        print(f"{dropout:<13} {head:<25} {dtype:<9} {per_step:>7.2f} {rate:>9.0f} {old / per_step:>6.2f} {versus} "
              f"{rate * 4 * parameters / peaks[dtype]:>8.1%}  {losses[0]:.6f}, {losses[-1]:.6f}")


if __name__ == "__main__":
    main()
