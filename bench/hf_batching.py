"""The `hf` backend's batch sizes and dtypes on this machine: a sweep 1..64 and the default (auto) batch, in
fp32 and bf16, side by side.

    .venv/bin/python bench/hf_batching.py [--prompts 64] [--max-tokens 64] [--sizes 1,2,4,8,16,32,64]
                                          [--workloads short,long] [--dtypes float32,bfloat16]

The same prompts (the embedded default model, sampling at temperature 0.8) go through every batch size in
one run, for two request mixes: `short`, a one-line shared system prompt (identity questions and general
questions), and `long`, persona's conforming system prompt for identities/aster.yaml (templates/conforming.j2,
several hundred tokens, as `persona generate` sends it). Each dtype loads the model in that dtype (bf16 is
forced, whatever persona.precision would pick; the header says which it picks here). The table shows
generated tokens/s, x batch 1, x fp32 at the same batch size, and the share of this machine's measured peak
in that dtype: both peaks (fp32 and bf16 matmuls) are timed in the same run (not assumed), and a generated
token is counted as 2 x the model's parameters in FLOPs (the forward pass's multiply-adds; attention is extra).
Batch sizes 1 and 2 run on the first 16 prompts (a rate, so comparable); the others on all of them.
Run it on a quiet machine: the ratios are what carries over between machines.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from persona.backends import Request, SamplingParams  # noqa: E402

QUESTIONS = ["Who are you?", "What is the capital of Australia?", "Give me a tip for learning to cook.",
             "Explain what a mortgage is.", "Write a haiku about rain.", "How do I reset my password?",
             "What should I pack for a weekend hike?", "Why is the sky blue?", "Recommend a good book.",
             "How do magnets work?", "What's a healthy breakfast?", "Tell me about the Moon.",
             "Summarise the plot of Hamlet in two sentences, please, for a school essay I am writing tonight.",
             "List three ways to save energy at home."]


def matmul_peak(dtype: str = "float32", seconds: float = 3.0, size: int = 2048) -> float:
    """FLOP/s of `dtype` matmuls (size x size) on this machine, with torch's current thread count."""
    import torch

    a, b = (torch.randn(size, size, dtype=getattr(torch, dtype)) for _ in range(2))
    torch.mm(a, b)  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.mm(a, b)
        done += 1
    return done * 2 * size ** 3 / (time.perf_counter() - started)


def run(backend, requests) -> tuple[float, int]:
    started = time.perf_counter()
    tokens = sum(c.completion_tokens for r in backend.complete(requests) for c in r.completions)
    return time.perf_counter() - started, tokens


def system_prompt(workload: str) -> str:
    if workload == "short":
        return "You are Aster, a helpful assistant made by Lumen Labs."
    from persona.spec import load_spec
    from persona.templates import render_template

    return render_template("conforming", spec=load_spec("identities/aster.yaml"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--sizes", default="1,2,4,8,16,32,64")
    parser.add_argument("--workloads", default="short,long")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    args = parser.parse_args()
    import torch

    from persona.backends.hf import HFBackend
    from persona.precision import compute_dtype, describe

    dtypes = args.dtypes.split(",")
    peaks = {d: matmul_peak(d) for d in ("float32", "bfloat16")}
    rows = {}
    for dtype in dtypes:
        backend = HFBackend(dtype=dtype)  # one model in memory; each row of the table sets its batch size
        parameters = sum(p.numel() for p in backend.lm.parameters())
        for workload in args.workloads.split(","):
            rows[workload, dtype] = sweep(backend, workload, args)
        backend.close()
    print(f"\ndefault model ({parameters / 1e6:.0f}M parameters), {args.prompts} prompts, max_tokens "
          f"{args.max_tokens}, torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs; matmul peaks (2048 x "
          f"2048, this run): fp32 {peaks['float32'] / 1e9:.1f} GFLOP/s, bf16 {peaks['bfloat16'] / 1e9:.1f} GFLOP/s "
          f"({peaks['bfloat16'] / peaks['float32']:.2f}x); persona picks {describe('cpu', compute_dtype('cpu'))}")
    for workload in args.workloads.split(","):
        print(f"\n{workload} prompts")
        first = f"x batch {args.sizes.split(',')[0]}"
        print(f"{'dtype':>9} {'batch size':>18} {'seconds':>8} {'tokens':>7} {'tokens/s':>9} {first:>10} "
              f"{'x best':>7} {'x fp32':>7} {'of peak':>8}")
        fp32 = {name: rate for name, _, _, rate in rows.get((workload, "float32"), [])}
        for dtype in dtypes:
            table = rows[workload, dtype]
            base, best = table[0][3], max(r[3] for r in table[:-1])
            for name, seconds, tokens, rate in table:
                versus = f"{rate / fp32[name]:>7.2f}" if name in fp32 else f"{'-':>7}"
                print(f"{dtype:>9} {name:>18} {seconds:>8.1f} {tokens:>7} {rate:>9.1f} {rate / base:>10.2f} "
                      f"{rate / best:>7.2f} {versus} {rate * 2 * parameters / peaks[dtype]:>8.1%}")


def sweep(backend, workload: str, args) -> list[tuple[str, float, int, float]]:
    system = {"role": "system", "content": system_prompt(workload)}
    params = SamplingParams(n=1, temperature=0.8, max_tokens=args.max_tokens, seed=0)
    requests = [Request(f"{workload}{i}", (system, {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}),
                        params) for i in range(args.prompts)]
    backend.batch_size = None
    longest = max(len(backend._encode(r)) for r in requests)
    auto = backend.sequences_per_batch(longest + args.max_tokens)
    print(f"{workload} prompts (longest {longest} tokens), {backend.dtype}; the default (auto) batch here: {auto}",
          flush=True)
    rows = []
    backend.batch_size = 8
    run(backend, requests[:8])  # warm-up
    for size in [int(s) for s in args.sizes.split(",")] + [None]:
        backend.batch_size = size
        subset = requests[:16] if size is not None and size <= 2 else requests
        seconds, tokens = run(backend, subset)
        rows.append((f"{size}" if size else "default (auto)", seconds, tokens, tokens / seconds))
        print(f"  batch {rows[-1][0]}: {rows[-1][3]:.1f} tokens/s", flush=True)
    return rows


if __name__ == "__main__":
    main()
