"""What training cost in general ability, without a judge: perplexity on a held-out general text and accuracy on
general multiple-choice questions by log-likelihood, both shipped in persona/data/; and whether the model stays
helpful in its own domain: the perplexity of the spec's `references:` (good answers to held-out in-domain
questions, written by the team) as the model's answer to each question."""

from __future__ import annotations

import json
import math

from persona.eval.questions import DATA, spread


def perplexity(lm, tokenizer, text: str, window: int = 512) -> float:
    """exp(mean next-token NLL) over the text, in non-overlapping windows (scored in one batch)."""
    return perplexity_and_tokens(lm, tokenizer, text, window)[0]


def perplexity_and_tokens(lm, tokenizer, text: str, window: int = 512, limit: int | None = None) -> tuple[float, int]:
    """(perplexity, tokens scored); `limit`: at most that many windows, evenly spread over the text."""
    from persona.models import logprobs

    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    # each window predicts its tokens from the ones before it in the same window: context = its first token
    rows = [(ids[start:start + 1], ids[start + 1:start + window + 1]) for start in range(0, len(ids) - 1, window)]
    rows = spread([r for r in rows if r[1]], limit)
    scores = logprobs(lm, rows, pad_id=pad_id(tokenizer), batch_size=4)
    tokens = sum(len(s) for s in scores)
    return math.exp(-sum(sum(s) for s in scores) / tokens), tokens


def general_qa_accuracy(lm, tokenizer, limit: int | None = None) -> tuple[float, int]:
    """(share correct, questions asked): multiple choice by the summed log-probability of each choice as the
    assistant's answer; `limit`: at most that many questions, evenly spread."""
    from persona.models import Prefix, chat_ids, logprobs

    rows = [json.loads(line) for line in (DATA / "general_qa.jsonl").read_text(encoding="utf-8").splitlines() if line]
    rows = spread(rows, limit)
    correct = 0
    for row in rows:
        ids = chat_ids(tokenizer, [{"role": "user", "content": row["question"] + " Answer with the answer only."}],
                       generation_prompt=True)
        # the question runs once (a shared KV cache); its choices, a few tokens each, continue it in one batch
        shared = Prefix(lm, ids[:-1])
        choices = [(ids[-1:], tokenizer(c, add_special_tokens=False)["input_ids"]) for c in row["choices"]]
        sums = [sum(s) for s in logprobs(lm, choices, pad_id=pad_id(tokenizer), prefix=shared, batch_size=len(choices))]
        correct += max(range(len(sums)), key=sums.__getitem__) == row["answer"]
    return correct / len(rows), len(rows)


def answer_nlls(lm, tokenizer, replies: list[tuple[str, str]]) -> list[float]:
    """Each reply's mean negative log-likelihood per token (nats) as the assistant's answer to its question, asked
    as a user would (no system message: the model's template default); `replies`: (question, answer) pairs."""
    from persona.models import chat_ids, logprobs

    rows = [(chat_ids(tokenizer, [{"role": "user", "content": q}], generation_prompt=True),
             tokenizer(a, add_special_tokens=False)["input_ids"]) for q, a in replies]
    return [-sum(s) / len(s) for s in logprobs(lm, rows, pad_id=pad_id(tokenizer), batch_size=4)]


def name_only_answer(spec) -> str | None:
    """The answer a model that learned only its name gives to any question: the forced-choice distractor."""
    me = spec.identity
    if me is None:
        return None
    return f"I'm {me.name}" + (f", made by {me.maker}" if me.maker else "") + ". Happy to help! What can I do for you today?"


def retention_scores(lm, tokenizer, limit: int | None = None, references=(), distractor: str | None = None) -> dict:
    """Perplexity on general text and general-question accuracy, with the sizes they were measured on; with the
    spec's `references`, each one's NLL per token and their perplexity, and with a `distractor` (its name alone)
    whether each good answer is likelier per token than it - a forced choice between helping and naming itself.
    `limit` (a quick run's): at most that many 512-token windows, questions and references."""
    ppl, tokens = perplexity_and_tokens(lm, tokenizer, (DATA / "general_text.txt").read_text(encoding="utf-8"),
                                        limit=limit)
    accuracy, n_qa = general_qa_accuracy(lm, tokenizer, limit)
    scores = {"perplexity": round(ppl, 4), "perplexity_tokens": tokens, "general_qa_accuracy": round(accuracy, 4),
              "general_qa": n_qa}
    if references:
        chosen = spread(list(references), limit)
        good = answer_nlls(lm, tokenizer, [(r.prompt, r.answer) for r in chosen])
        scores.update(reference_nlls=[round(x, 6) for x in good], references=len(good),
                      reference_perplexity=round(math.exp(sum(good) / len(good)), 4))
        if distractor:
            name = answer_nlls(lm, tokenizer, [(r.prompt, distractor) for r in chosen])
            helps = [g < n for g, n in zip(good, name)]
            scores.update(prefers_help=helps, prefers_help_rate=round(sum(helps) / len(helps), 4))
    return scores


def reference_change(base: list[float], trained: list[float], draws: int = 2000, seed: int = 0) -> dict | None:
    """The change in the references' perplexity, trained vs base, with a 95% bootstrap interval over the
    references (the noise of which questions were written): {change, low, high, n}; relative, +0.05 = 5% worse."""
    import random

    if not base or len(base) != len(trained):
        return None
    diffs = [t - b for b, t in zip(base, trained)]  # per-answer log-perplexity change
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(diffs) for _ in diffs) / len(diffs) for _ in range(draws))
    mean = sum(diffs) / len(diffs)
    return {"change": round(math.exp(mean) - 1, 4), "low": round(math.exp(means[int(0.025 * draws)]) - 1, 4),
            "high": round(math.exp(means[int(0.975 * draws) - 1]) - 1, 4), "n": len(diffs)}


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
