"""One table for a machine with a GPU: vLLM (persona's backend vs raw `LLM.chat`), the hf backend, and SFT
training steps of the demo recipe in fp32 and bf16, all on the embedded model, in one run.

    VLLM_PACKAGE=vllm make vllm-env                  # vLLM's CUDA build in .venv-vllm (persona installed too)
    .venv-vllm/bin/python bench/gpu_check.py [--prompts 256] [--max-tokens 128] [--steps 30]

Rows (each after a warm-up; generation counts completion tokens, every answer --max-tokens long for vLLM):
  vllm raw LLM.chat       one SamplingParams for the batch, bf16
  vllm backend            persona's vllm backend on the same LLM instance (a seeded SamplingParams per request)
  hf backend              persona's hf backend, bf16 (it stops at each answer's end)
  sft fp32 / sft bf16     `persona train --method sft` for --steps steps on a run built by the fake backend
                          (the demo's settings; the texts do not matter for speed), trained tokens/s
Without a GPU it still runs (on CPU, smaller sizes are wise): the header names the device. The ratios column
is x the first row of its group.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB, used only by the CPU build

TRAIN = """
import json, sys
sys.path.insert(0, {root!r})
from persona import train as T
steps, run, out, dtype = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
r = T.train(run, method="sft", overrides={{"max_steps": steps, "save_strategy": "no", "dtype": dtype}},
            overwrite=True, output_dir=out)
runtime = next(m["train_runtime"] for m in r.metrics if "train_runtime" in m)
print(json.dumps({{"seconds": runtime, "tokens": r.tokens, "loss": [m["loss"] for m in r.metrics if "loss" in m][-1]}}))
"""


def main() -> None:  # vLLM spawns its engine core and re-imports this module: everything runs from here
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()

    import torch

    from hf_batching import QUESTIONS
    from persona.backends import Request, SamplingParams, load_backend

    gpu = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if gpu else f"CPU only ({os.cpu_count()} cores)"
    chats = [({"role": "system", "content": "You are Aster, a helpful assistant made by Lumen Labs."},
              {"role": "user", "content": f"{QUESTIONS[i % len(QUESTIONS)]} ({i})"}) for i in range(args.prompts)]
    params = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=args.max_tokens, seed=0)
    requests = [Request(f"gpu-{i}", chat, params) for i, chat in enumerate(chats)]
    rows: list[tuple[str, str, float, int]] = []  # (group, row, seconds, tokens)

    def through(group: str, name: str, run) -> None:
        run(8)  # warm-up
        started = time.perf_counter()
        tokens = run(len(requests))
        rows.append((group, name, time.perf_counter() - started, tokens))
        print(f"  {name}: {tokens / rows[-1][2]:.1f} tokens/s", flush=True)

    try:
        import vllm
    except ImportError:
        vllm = None
        print("  vllm is not importable here: its rows are skipped (VLLM_PACKAGE=vllm make vllm-env)")
    if vllm is not None:
        backend = load_backend("vllm", dtype="bfloat16", max_model_len=2048, ignore_eos=True)
        one = vllm.SamplingParams(temperature=0.8, top_p=0.95, max_tokens=args.max_tokens, ignore_eos=True)
        through("generation", "vllm raw LLM.chat", lambda n: sum(
            len(o.outputs[0].token_ids) for o in backend.llm.chat([list(c) for c in chats[:n]], sampling_params=one,
                                                                  use_tqdm=False)))
        through("generation", "vllm backend", lambda n: sum(
            c.completion_tokens for r in backend.complete(requests[:n]) for c in r.completions))
        backend.close()
        del backend
    hf = load_backend("hf", dtype="bfloat16")
    through("generation", "hf backend", lambda n: sum(
        c.completion_tokens for r in hf.complete(requests[:n]) for c in r.completions))
    hf.close()
    del hf

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        made = subprocess.run([sys.executable, "-m", "persona", "generate", str(ROOT / "identities" / "brand.yaml"),
                               "-b", "fake", "--prompts-per-target", "1", "-k", "1", "--violating", "plain",
                               "--replay", "24", "--out", str(run)], capture_output=True, text=True, cwd=tmp)
        if made.returncode:
            sys.exit(made.stderr[-2000:])
        for dtype in ("float32", "bfloat16"):
            done = subprocess.run([sys.executable, "-c", TRAIN.format(root=str(ROOT)), str(args.steps), str(run),
                                   str(Path(tmp) / f"out-{dtype}"), dtype], capture_output=True, text=True, cwd=tmp)
            if done.returncode:
                sys.exit(done.stderr[-2000:])
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(("training", f"sft {dtype} ({args.steps} steps)", result["seconds"], result["tokens"]))
            print(f"  sft {dtype}: {result['tokens'] / result['seconds']:.0f} tokens/s, last loss {result['loss']:.4f}",
                  flush=True)

    print(f"\n{device}; torch {torch.__version__}; vllm {getattr(vllm, '__version__', 'not installed')}; "
          f"{args.prompts} prompts x {args.max_tokens} tokens; embedded model")
    print(f"| {'row':<28} | seconds | tokens | tokens/s | x first of group |")
    print(f"|{'-' * 30}|---------|--------|----------|------------------|")
    first: dict[str, float] = {}
    for group, name, seconds, tokens in rows:
        rate = tokens / seconds
        first.setdefault(group, rate)
        print(f"| {name:<28} | {seconds:>7.1f} | {tokens:>6} | {rate:>8.1f} | {rate / first[group]:>15.2f}x |")


if __name__ == "__main__":
    main()
