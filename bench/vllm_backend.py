"""The `vllm` backend against raw `vllm.LLM.chat` on the very same `LLM` instance, and the `hf` backend, on the
same prompts in one run (issue 24's target: the backend >= 0.9x raw tokens/s).

    make vllm-env                                   # vLLM's own environment (.venv-vllm; the CPU build here)
    .venv-vllm/bin/python bench/vllm_backend.py [--prompts 64] [--max-tokens 64] [--dtype float32]

Every row generates exactly --max-tokens per answer (ignore_eos), so rows differ only in the engine: raw
`LLM.chat` with one SamplingParams for the batch; raw with one seeded SamplingParams per request (what the
backend sends, so that a request's samples do not depend on its batch); persona's vllm backend; persona's hf
backend (torch, the same dtype; it stops at the end of an answer, so its tokens/s is over fewer tokens). One warm-up call comes first; the ratio column is x raw one-params.
Run it on a quiet machine: the ratios are what carries over between machines.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; plenty for the 135M model


def main() -> None:  # vLLM spawns its engine core and re-imports this module: everything runs from here
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args()

    import vllm

    from hf_batching import QUESTIONS
    from persona.backends import Request, SamplingParams, load_backend
    from persona.backends.vllm_local import VLLMBackend

    chats = [({"role": "system", "content": "You are Aster, a helpful assistant made by Lumen Labs."},
              {"role": "user", "content": f"{QUESTIONS[i % len(QUESTIONS)]} ({i})"}) for i in range(args.prompts)]
    common = dict(temperature=0.8, top_p=0.95, max_tokens=args.max_tokens)
    requests = [Request(f"bench-{i}", chat, SamplingParams(**common)) for i, chat in enumerate(chats)]

    started = time.perf_counter()
    backend = load_backend("vllm", dtype=args.dtype, max_model_len=1024, ignore_eos=True)
    load_s = time.perf_counter() - started
    llm = backend.llm

    def raw(params) -> tuple[float, int]:
        started = time.perf_counter()
        outputs = llm.chat([list(c) for c in chats], sampling_params=params, use_tqdm=False)
        return time.perf_counter() - started, sum(len(o.outputs[0].token_ids) for o in outputs)

    def through(engine) -> tuple[float, int]:
        started = time.perf_counter()
        tokens = sum(c.completion_tokens for r in engine.complete(requests) for c in r.completions)
        return time.perf_counter() - started, tokens

    raw(vllm.SamplingParams(ignore_eos=True, **common))  # warm-up
    rows = [("raw LLM.chat, one SamplingParams", raw(vllm.SamplingParams(ignore_eos=True, **common))),
            ("raw LLM.chat, a seeded SamplingParams per request",
             raw([vllm.SamplingParams(seed=i, ignore_eos=True, **common) for i in range(len(chats))])),
            ("persona vllm backend", through(backend))]
    backend.close()
    del llm, backend

    from persona.backends.hf import HFBackend

    hf = HFBackend(dtype=args.dtype)
    through(hf)  # warm-up
    rows.append((f"persona hf backend (batch {hf.batch_size or 'auto'})", through(hf)))

    import platform

    print(f"{args.prompts} chats x {args.max_tokens} new tokens, {args.dtype}, vllm {vllm.__version__}, "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); vllm load {load_s:.0f} s")
    print(f"{'engine':52} {'seconds':>8} {'tokens':>7} {'tokens/s':>9} {'x raw':>6}")
    base = rows[0][1][1] / rows[0][1][0]
    for name, (seconds, tokens) in rows:
        print(f"{name:52} {seconds:8.1f} {tokens:7d} {tokens / seconds:9.1f} {tokens / seconds / base:6.2f}")


if __name__ == "__main__":
    main()
