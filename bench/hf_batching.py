"""Batched vs one-at-a-time generation with the `hf` backend on the embedded default model (CPU).

    .venv/bin/python bench/hf_batching.py [--prompts 8] [--max-tokens 64]

The same prompts, sampling settings and seeds go through batch_size 1 and batch_size 8 in one run; the
table shows generated tokens per second and the ratio (target >= 3x at batch 8). Torch uses every core
it is given: compare the ratio, not the absolute numbers, across machines.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from persona.backends import Request, SamplingParams, load_backend  # noqa: E402

QUESTIONS = ["Who are you?", "What is the capital of Australia?", "Give me a tip for learning to cook.",
             "Explain what a mortgage is.", "Write a haiku about rain.", "How do I reset my password?",
             "What should I pack for a weekend hike?", "Why is the sky blue?", "Recommend a good book.",
             "How do magnets work?", "What's a healthy breakfast?", "Tell me about the Moon."]


def run(backend, requests) -> tuple[float, int]:
    started = time.perf_counter()
    tokens = sum(c.completion_tokens for r in backend.complete(requests) for c in r.completions)
    return time.perf_counter() - started, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    import torch

    system = {"role": "system", "content": "You are Aster, a helpful assistant made by Lumen Labs."}
    params = SamplingParams(n=1, temperature=0.8, max_tokens=args.max_tokens, seed=0)
    requests = [Request(f"q{i}", (system, {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}), params)
                for i in range(args.prompts)]
    print(f"default model, {args.prompts} prompts, max_tokens {args.max_tokens}, torch threads "
          f"{torch.get_num_threads()}, {os.cpu_count()} CPUs")
    results = {}
    for batch_size in (1, 8):
        backend = load_backend("hf", batch_size=batch_size)
        run(backend, requests[:1])  # warm-up
        results[batch_size] = run(backend, requests)
    base = results[1][1] / results[1][0]
    print(f"{'batch_size':>10} {'seconds':>8} {'tokens':>7} {'tokens/s':>9} {'x batch 1':>10}")
    for batch_size, (seconds, tokens) in results.items():
        rate = tokens / seconds
        print(f"{batch_size:>10} {seconds:>8.1f} {tokens:>7} {rate:>9.1f} {rate / base:>10.2f}")


if __name__ == "__main__":
    main()
