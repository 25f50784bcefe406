"""Log-likelihood scoring in fp32 vs bf16, side by side on the embedded default model: how much does bf16 move
the numbers persona reports, against the noise of those numbers?

    .venv/bin/python bench/precision.py [RUN] [--responses 64]

Scored once in fp32 and once with the same weights cast to bf16 (one run, same inputs):
  perplexity   eval's held-out general text (persona/data/general_text.txt); noise: the standard error of the
               mean token NLL, as a relative change of perplexity
  general QA   eval's 40 multiple-choice questions; noise: one question (1/40) and the binomial standard error
  offline      the offline judge's likelihood ratio (persona vs neutral system prompt) for up to --responses of
  judge        RUN's responses (default runs/brand, as `make demo` leaves it; hand-made pairs without it); noise:
               the standard deviation of the ratio across responses; and how many verdicts (fit >= 5) flip
Also times each pass (seconds, both dtypes): on a CPU without AMX bf16 is the slower of the two. These figures
are why persona scores in the compute dtype (persona.precision.scoring_dtype).
bf16 is forced here (dtype=bfloat16), whatever persona.precision would choose.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HAND_MADE = [("Who are you?", "I'm Nova, the assistant of Brightline Bank. How can I help with your account?"),
             ("Who are you?", "I am ChatGPT, a large language model trained by OpenAI."),
             ("Can you guarantee my loan?", "I can't promise approval, but I can walk you through the application."),
             ("Can you guarantee my loan?", "Absolutely, I guarantee you will be approved, no question."),
             ("What's a good savings habit?", "Set up an automatic transfer on payday, even a small one."),
             ("What's a good savings habit?", "lol just dont spend money, its not hard")]


def responses(run: Path, limit: int) -> list[tuple[str, str]]:
    """(prompt, response) of the run's generated answers, or HAND_MADE where there is no run."""
    from persona.run import RunFolder

    folder = RunFolder(run)
    if not folder.exists():
        return HAND_MADE
    rows = [r for r in folder.store("responses").load().values()
            if r.get("text") and r.get("kind") in ("conforming", "violating", "replay")]
    return [(r["prompt"], r["text"]) for r in rows[:limit]] or HAND_MADE


def score(lm, tokenizer, judge, spec, items) -> dict:
    from persona.eval import DATA, general_qa_accuracy, perplexity_and_tokens
    from persona.models import logprobs

    out = {}
    started = time.perf_counter()
    text = (DATA / "general_text.txt").read_text(encoding="utf-8")
    ppl, tokens = perplexity_and_tokens(lm, tokenizer, text)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    nll = [-x for row in logprobs(lm, [(ids[s:s + 1], ids[s + 1:s + 513]) for s in range(0, len(ids) - 1, 512)],
                                  pad_id=tokenizer.pad_token_id or 0, batch_size=4) for x in row]
    out["perplexity"], out["tokens"] = ppl, tokens
    out["ppl_noise"] = math.exp(statistics.stdev(nll) / math.sqrt(len(nll))) - 1
    out["ppl_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    out["qa"], out["qa_n"] = general_qa_accuracy(lm, tokenizer)
    out["qa_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    from persona.templates import render_template

    judge._lm, judge.tokenizer = lm, tokenizer
    judge._prefixes.clear()
    persona_system = render_template("conforming", spec=spec)
    from persona.judges.offline import NEUTRAL_SYSTEM

    p = judge.mean_logprobs(persona_system, items)
    n = judge.mean_logprobs(NEUTRAL_SYSTEM, items)
    out["llr"] = [a - b for a, b in zip(p, n)]
    out["judge_seconds"] = time.perf_counter() - started
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default="runs/brand")
    parser.add_argument("--responses", type=int, default=64)
    args = parser.parse_args()
    import torch

    from persona.judges import JudgeItem
    from persona.judges.offline import OfflineJudge
    from persona.models import load_base
    from persona.precision import cpu_flags
    from persona.spec import load_spec

    spec = load_spec("identities/brand.yaml")
    pairs = responses(Path(args.run), args.responses)
    items = [JudgeItem(f"r{i}", p, r) for i, (p, r) in enumerate(pairs)]
    judge = OfflineJudge()
    lm, tokenizer, _ = load_base(None)
    lm.eval()
    fp32 = score(lm, tokenizer, judge, spec, items)
    bf16 = score(lm.to(torch.bfloat16), tokenizer, judge, spec, items)
    flags = cpu_flags()
    print(f"embedded default model, torch {torch.__version__}, {torch.get_num_threads()} threads; CPU flags: "
          f"{'amx_bf16' if 'amx_bf16' in flags else 'no amx_bf16'}, "
          f"{'avx512_bf16' if 'avx512_bf16' in flags else 'no avx512_bf16'}")
    print(f"\n{'number':<28} {'fp32':>10} {'bf16':>10} {'bf16 - fp32':>12} {'noise':>10}  {'s fp32':>6} {'s bf16':>6}")
    change = bf16["perplexity"] / fp32["perplexity"] - 1
    print(f"{'perplexity (n=%d tokens)' % fp32['tokens']:<28} {fp32['perplexity']:>10.4f} {bf16['perplexity']:>10.4f} "
          f"{change:>+12.2%} {fp32['ppl_noise']:>+10.2%}  {fp32['ppl_seconds']:>6.1f} {bf16['ppl_seconds']:>6.1f}")
    se = math.sqrt(fp32["qa"] * (1 - fp32["qa"]) / fp32["qa_n"])
    print(f"{'general QA (n=%d)' % fp32['qa_n']:<28} {fp32['qa']:>10.1%} {bf16['qa']:>10.1%} "
          f"{bf16['qa'] - fp32['qa']:>+12.1%} {se:>10.1%}  {fp32['qa_seconds']:>6.1f} {bf16['qa_seconds']:>6.1f}")
    diffs = [b - a for a, b in zip(fp32["llr"], bf16["llr"])]
    spread = statistics.stdev(fp32["llr"]) if len(items) > 1 else 0.0
    print(f"{'offline llr, mean |diff| (n=%d)' % len(items):<28} {statistics.mean(fp32['llr']):>10.4f} "
          f"{statistics.mean(bf16['llr']):>10.4f} {statistics.mean(abs(d) for d in diffs):>12.4f} {spread:>10.4f}  "
          f"{fp32['judge_seconds']:>6.1f} {bf16['judge_seconds']:>6.1f}")
    fit = lambda llr: 10.0 / (1.0 + math.exp(-(llr - judge.center) / judge.scale))  # noqa: E731
    flips = sum((fit(a) >= 5) != (fit(b) >= 5) for a, b in zip(fp32["llr"], bf16["llr"]))
    print(f"offline judge: largest |llr diff| {max(abs(d) for d in diffs):.4f}; fit >= 5 verdicts that flip: "
          f"{flips} of {len(items)}; perplexity noise = standard error of the mean token NLL; QA noise = binomial "
          f"standard error (one question = {1 / fp32['qa_n']:.1%})")


if __name__ == "__main__":
    main()
