"""What training cost in general ability, without a judge: perplexity on a held-out general text and accuracy on
general multiple-choice questions by log-likelihood, both shipped in persona/data/."""

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


def retention_scores(lm, tokenizer, limit: int | None = None) -> dict:
    """Perplexity on general text and general-question accuracy, with the sizes they were measured on.
    `limit` (a quick run's): at most that many 512-token windows and questions."""
    ppl, tokens = perplexity_and_tokens(lm, tokenizer, (DATA / "general_text.txt").read_text(encoding="utf-8"),
                                        limit=limit)
    accuracy, n_qa = general_qa_accuracy(lm, tokenizer, limit)
    return {"perplexity": round(ppl, 4), "perplexity_tokens": tokens, "general_qa_accuracy": round(accuracy, 4),
            "general_qa": n_qa}


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
