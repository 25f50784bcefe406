"""The `hf` backend's decode loop against transformers' `generate`, side by side on the same batches.

    .venv/bin/python bench/hf_decode.py [--rows 48] [--mixes violating,conforming,eval]

persona's loop (persona/backends/hf.py `_decode`) drops rows that have ended from the batch and samples among
the 50 most likely tokens; `generate` runs every row until the batch's longest answer ends and samples over
the whole vocabulary (the same top-50/top-p distribution). Both run inside the same backend, so batching, the
shared-prefix KV cache and the repetition penalty are the same; only the decode differs. Three request mixes
shaped like `make demo`'s (identities/brand.yaml, the embedded default model):
  violating   plain questions, sampling at 0.8, up to 210 new tokens (the plain rejected answers)
  conforming  persona's conforming system prompt (about 650 tokens, shared), sampling, up to 210 tokens
  eval        greedy, 64 new tokens, a one-line system prompt (persona eval's questions)
Each mix runs its rows as one batch, first with `generate`, then with persona's loop (a warm-up batch runs
before). Greedy answers must come out identical; sampled ones differ (another random stream) but are drawn
from the same distribution (tests/test_hf_backend.py). Run it on a quiet machine; compare the ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from persona.backends import Request, SamplingParams  # noqa: E402

QUESTIONS = ["How do I freeze my card?", "What fees do you charge for transfers abroad?",
             "Can I open a savings account online?", "My app login keeps failing, help.",
             "Is a fixed-rate mortgage better than a variable one?", "Why was I charged twice for one purchase?",
             "Tell me a joke about banks.", "What is compound interest?", "Who are you?",
             "Write a haiku about rain.", "How do magnets work?", "Recommend a good book."]


def transformers_generate(backend):
    """`_decode` done by transformers' `generate`, as the backend did before persona's loop."""

    def decode(input_ids, attention_mask, cache, prefix, params):
        kwargs = dict(max_new_tokens=params.max_tokens, do_sample=params.temperature > 0,
                      pad_token_id=backend.tokenizer.pad_token_id, repetition_penalty=backend.repetition_penalty)
        if params.temperature > 0:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
        if cache is not None:
            kwargs[backend._cache_kwarg] = cache  # `cache` from transformers 5.24 on
        output = backend.lm.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return output[:, input_ids.shape[1]:].tolist()

    return decode


def requests_for(mix: str, rows: int) -> list[Request]:
    sampled = SamplingParams(n=1, temperature=0.8, top_p=0.95, max_tokens=210, seed=0)
    if mix == "eval":
        system, params = "You are a helpful assistant.", SamplingParams(n=1, temperature=0.0, max_tokens=64)
    elif mix == "violating":
        system, params = "You are a helpful assistant.", sampled
    else:
        from persona.spec import load_spec
        from persona.templates import render_template

        system, params = render_template("conforming", spec=load_spec("identities/brand.yaml")), sampled
    return [Request(f"{mix}{i}", ({"role": "system", "content": system},
                                  {"role": "user", "content": f"{QUESTIONS[i % len(QUESTIONS)]} ({i})"}), params)
            for i in range(rows)]


def timed(backend, requests) -> tuple[float, list]:
    started = time.perf_counter()
    results = list(backend.complete(requests))
    return time.perf_counter() - started, [c for r in results for c in r.completions]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=48, help="rows per mix, run as one batch")
    parser.add_argument("--mixes", default="violating,conforming,eval")
    args = parser.parse_args()
    import torch

    from persona.backends.hf import HFBackend

    backend = HFBackend()
    ours = backend._decode
    print(f"default model, {args.rows} rows per batch, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs")
    backend.batch_size = 8
    timed(backend, requests_for("eval", 8))  # warm-up
    table = []
    for mix in args.mixes.split(","):
        requests = requests_for(mix, args.rows)
        backend.batch_size = args.rows
        backend._decode = transformers_generate(backend)
        before, old = timed(backend, requests)
        backend._decode = ours
        after, new = timed(backend, requests)
        same = [a.text == b.text for a, b in zip(old, new)]
        table.append((mix, before, sum(c.completion_tokens for c in old), after,
                      sum(c.completion_tokens for c in new), sum(same) if mix == "eval" else None))
        print(f"  {mix}: done", flush=True)
    print(f"\n{'mix':<11} {'generate s':>10} {'tokens':>7} {'tok/s':>7} {'persona s':>10} {'tokens':>7} "
          f"{'tok/s':>7} {'x tok/s':>8}  greedy answers equal")
    for mix, before, old_tokens, after, new_tokens, equal in table:
        ratio = (new_tokens / after) / (old_tokens / before)
        print(f"{mix:<11} {before:>10.1f} {old_tokens:>7} {old_tokens / before:>7.1f} {after:>10.1f} {new_tokens:>7} "
              f"{new_tokens / after:>7.1f} {ratio:>8.2f}  {'-' if equal is None else f'{equal}/{args.rows}'}")


if __name__ == "__main__":
    main()
