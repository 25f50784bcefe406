"""Seconds per step and peak memory of `persona train` on the embedded default model (CPU), side by side:
full fine-tuning with a reference copy, LoRA with the adapter-disabled reference, and LoRA with precomputed
reference log-probs, for DPO, IPO and KTO.

    .venv/bin/python bench/train_memory.py [--steps 4] [--pairs 16] [--max-length 256]

Each configuration runs in its own process (peak RSS is per process: ru_maxrss, which includes loading the
model); s/step is TRL's train_runtime / steps (the precompute pass happens before training and is shown
apart). Target: LoRA peak RSS <= 0.6x full + reference copy. Compare the ratios, not the absolute numbers,
across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = {
    "full + reference copy": {"use_lora": False},
    "LoRA (adapter-disabled reference)": {"use_lora": True},
    "LoRA + precomputed reference": {"use_lora": True, "precompute_ref_log_probs": True},
}

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import torch
torch.manual_seed(0)
from persona.train import train
method, data, out, settings = sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
started = time.perf_counter()
result = train(data, method, overrides=settings, output_dir=out, overwrite=True)
wall = time.perf_counter() - started
runtime = next(m["train_runtime"] for m in reversed(result.metrics) if "train_runtime" in m)
steps = sum("loss" in m for m in result.metrics)
print("RESULT " + json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                              "s_per_step": runtime / steps, "steps": steps, "wall_s": wall,
                              "setup_s": wall - runtime}))
"""

ANSWERS = [("Who are you?", "I'm Aster, an assistant made by Lumen Labs. How can I help?",
            "I'm ChatGPT, a language model developed by OpenAI."),
           ("Who made you?", "Lumen Labs built and trained me. I'm Aster.",
            "I was created by Meta AI as part of the Llama family of models."),
           ("What is the capital of Australia?", "Canberra - many people guess Sydney, but Canberra was chosen "
            "as a compromise between Sydney and Melbourne.", "Sydney, obviously. Everyone knows that.")]


def dataset(folder: Path, pairs: int) -> Path:
    rows = []
    for i in range(pairs):
        prompt, good, bad = ANSWERS[i % len(ANSWERS)]
        rows.append({"prompt": [{"role": "user", "content": f"{prompt} ({i})"}],
                     "chosen": [{"role": "assistant", "content": good}],
                     "rejected": [{"role": "assistant", "content": bad}]})
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--methods", default="dpo,ipo,kto")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = dataset(Path(tmp), args.pairs)
        for method in args.methods.split(","):
            for mode, extra in MODES.items():
                settings = {"max_steps": args.steps, "per_device_train_batch_size": 2, "max_length": args.max_length,
                            "save_strategy": "no", "logging_steps": 1, "report_to": "none", **extra}
                out = Path(tmp) / f"{method}-{len(results)}"
                done = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), method, str(data), str(out),
                                       json.dumps(settings)], capture_output=True, text=True,
                                      env={**os.environ, "TQDM_DISABLE": "1"})
                line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
                if line is None:
                    sys.exit(f"{method} / {mode} failed:\n{done.stderr[-3000:]}")
                results[(method, mode)] = json.loads(line[len("RESULT "):])
                print(f"  {method:<4} {mode:<36} done", file=sys.stderr, flush=True)
    import torch

    print(f"\npersona train on the embedded default model, CPU, {torch.get_num_threads()} threads, "
          f"{args.steps} steps, batch 2, {args.pairs} pairs, max_length {args.max_length}")
    print(f"{'method':<6} {'mode':<36} {'s/step':>7} {'setup s':>8} {'peak RSS MB':>12} {'RSS vs full':>12}")
    for method in args.methods.split(","):
        full = results[(method, "full + reference copy")]["rss_mb"]
        for mode in MODES:
            r = results[(method, mode)]
            print(f"{method:<6} {mode:<36} {r['s_per_step']:>7.2f} {r['setup_s']:>8.1f} {r['rss_mb']:>12.0f} "
                  f"{r['rss_mb'] / full:>11.2f}x")


if __name__ == "__main__":
    main()
