"""The offline judge's likelihood pass with and without the cached system-prompt prefix, on the default model.

    .venv/bin/python bench/offline_judge.py [--items 16]

Scores the same responses both ways in one run (the uncached path is forced by making the prefix
check fail), prints seconds, items per second, the speed-up and the largest difference between the
two paths' log-probabilities (they must agree to float precision).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from persona.judges import JudgeItem  # noqa: E402
from persona.judges.offline import OfflineJudge  # noqa: E402
from persona.spec import load_spec  # noqa: E402
from persona.templates import render_template  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=16)
    args = parser.parse_args()
    judge = OfflineJudge()
    spec = load_spec("identities/brand.yaml")
    system = render_template("conforming", spec=spec)
    items = [JudgeItem(str(i), f"Question {i}: why was I charged a fee on my card?",
                       "Fees are listed in the app under Account > Statements > Fees. " * (1 + i % 4))
             for i in range(args.items)]
    judge.mean_logprobs(system, items[:1])  # load the model, compute the prefix

    def timed() -> tuple[float, list[float]]:
        started = time.perf_counter()
        values = []
        for i in range(0, len(items), judge.batch_size):
            values += judge.mean_logprobs(system, items[i:i + judge.batch_size])
        return time.perf_counter() - started, values

    cached_s, cached = timed()
    original = judge.tokenizer.apply_chat_template
    judge.tokenizer.apply_chat_template = lambda m, **kw: ("X" + original(m, **kw)) if len(m) == 1 else original(m, **kw)
    full_s, full = timed()
    print(f"default model, brand system prompt, {args.items} responses, batch {judge.batch_size}, {os.cpu_count()} CPUs")
    print(f"{'path':<22} {'seconds':>8} {'items/s':>8}")
    print(f"{'cached prefix':<22} {cached_s:>8.2f} {args.items / cached_s:>8.2f}")
    print(f"{'full sequences':<22} {full_s:>8.2f} {args.items / full_s:>8.2f}")
    print(f"speed-up {full_s / cached_s:.2f}x; largest log-prob difference {max(abs(a - b) for a, b in zip(cached, full)):.2e}")


if __name__ == "__main__":
    main()
