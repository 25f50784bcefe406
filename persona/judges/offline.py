"""The `offline` judge (the default): the `rules` judge plus a persona likelihood ratio from a local model.
No API, no GPU.

Persona likelihood ratio, per response r to prompt p (mean over r's tokens, in nats):

    llr = mean log P(r | identity system prompt, p) - mean log P(r | neutral system prompt, p)

A response the identity prompt makes more likely than a neutral "helpful assistant" prompt does is in
character by this measure: it says the persona's name, uses its tone and vocabulary, follows its
examples. The ratio becomes a 0-10 "fit" score, fit = 10 * sigmoid((llr - center) / scale), and the
overall score is the lower of fit and the rules judge's overall score (a broken hard rule always wins).

What each part catches and misses:
  * rules: every machine check, other-origin claims, a missing name or maker when asked, avoided
    vocabulary, a wrong script - exactly, but nothing else;
  * likelihood ratio: tone and persona drift the rules cannot see (a rude answer to a bank customer, an
    impatient tutor), to the extent the scoring model follows the identity prompt. With the embedded
    135M model that is weakly: it separates blatant cases and misses subtle ones. It rewards text that
    copies the prompt's wording, and it cannot see factual errors. A stronger local model
    (`model=PATH`) gives a better signal. Per-target scores for traits, style rules and ethics stay
    None: the ratio measures the persona as a whole.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

from persona.judges import JudgeItem, Judgement
from persona.judges.rules import RulesJudge, warn_unchecked
from persona.spec import Spec
from persona.templates import render_template

NEUTRAL_SYSTEM = "You are a helpful assistant."


class OfflineJudge:
    def __init__(self, model: str | None = None, batch_size: int = 8, center: float = 0.0, scale: float = 0.25,
                 max_length: int = 1024, templates: str | None = None):
        from persona.backends.hf import resolve_model

        self._source, self.model = resolve_model(model)
        self.name = f"offline:{self.model}"
        self.batch_size = int(batch_size)
        self.center, self.scale = float(center), float(scale)
        self.max_length = int(max_length)
        self.templates = templates
        self.rules = RulesJudge()
        self._lm = None
        from persona.templates import template_hash

        self.fingerprint = (f"{self.name}|{self.center}|{self.scale}|{self.max_length}|"
                            f"{template_hash('conforming', templates)}|{self.rules.fingerprint}")

    def close(self) -> None:
        self._lm = None

    def _load(self):
        if self._lm is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            self.tokenizer = AutoTokenizer.from_pretrained(self._source)
            self._lm = AutoModelForCausalLM.from_pretrained(self._source, dtype=torch.float32).eval()
        return self._lm

    def judge(self, spec: Spec, items: Sequence[JudgeItem]) -> Iterator[tuple[JudgeItem, Judgement]]:
        warn_unchecked(spec, "offline", " (only the likelihood ratio, through the overall score, reflects them)")
        persona_system = render_template("conforming", self.templates, spec=spec)
        for start in range(0, len(items), self.batch_size):
            batch = list(items[start:start + self.batch_size])
            scorable = [i for i in batch if i.response.strip()]
            persona = self.mean_logprobs(persona_system, scorable)
            neutral = self.mean_logprobs(NEUTRAL_SYSTEM, scorable)
            llrs = {item.key: p - n for item, p, n in zip(scorable, persona, neutral)}
            for item in batch:
                verdict = self.rules.judge_one(spec, item.prompt, item.response)
                if item.key not in llrs:  # empty response: the rules verdict (all zeros) stands
                    yield item, verdict
                    continue
                llr = llrs[item.key]
                fit = 10.0 / (1.0 + math.exp(-(llr - self.center) / self.scale))
                overall = min(fit, verdict.overall if verdict.overall is not None else 10.0)
                rationale = f"persona fit {fit:.1f}/10 (llr {llr:+.3f})"
                if verdict.rationale != "passes every machine check":
                    rationale += "; " + verdict.rationale
                yield item, Judgement("ok", round(overall, 3), verdict.scores, rationale,
                                      f"{verdict.raw} | llr={llr:.4f} fit={fit:.3f}")

    def mean_logprobs(self, system: str, items: Sequence[JudgeItem]) -> list[float]:
        """Mean log-probability per token of each response (and its end-of-turn token) after system + prompt.

        The system prompt is the same for every item, so its keys and values are computed once and
        reused (a KV-cache prefix); each row then only runs its own prompt and response, left-padded,
        with explicit position ids so padding does not shift positions. Where the chat template does
        not render the system prompt as a clean prefix, every row runs in full instead.
        """
        if not items:
            return []
        import torch

        lm = self._load()
        tok = self.tokenizer
        prefix_text = tok.apply_chat_template([{"role": "system", "content": system}], tokenize=False)
        prefix_ids = tok(prefix_text, add_special_tokens=False)["input_ids"]
        rows, spans = [], []
        for item in items:
            messages = [{"role": "system", "content": system}, {"role": "user", "content": item.prompt}]
            context = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            full = tok.apply_chat_template(messages + [{"role": "assistant", "content": item.response}], tokenize=False)
            context_ids = tok(context, add_special_tokens=False)["input_ids"]
            full_ids = tok(full, add_special_tokens=False)["input_ids"][:len(context_ids) + self.max_length // 2]
            rows.append(full_ids)
            spans.append(len(full_ids) - len(context_ids))  # response tokens, counted from the end
        cached = all(r[:len(prefix_ids)] == prefix_ids for r in rows) and len(prefix_ids) > 0
        if cached:
            rows = [r[len(prefix_ids):] for r in rows]
        rows = [r[-self.max_length:] for r in rows]  # very long prompts: keep their end
        width = max(len(r) for r in rows)
        tail = max(spans) + 1
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        offset = len(prefix_ids) if cached else 0
        positions = (offset + mask.cumsum(-1) - 1).clamp(min=offset)
        kwargs = dict(input_ids=ids, position_ids=positions, logits_to_keep=tail)
        with torch.inference_mode():
            if cached:
                prefix = self._prefix_cache(prefix_ids)
                kwargs["past_key_values"] = prefix.expand(len(rows))
                kwargs["attention_mask"] = torch.cat([torch.ones(len(rows), offset, dtype=mask.dtype), mask], dim=1)
            else:
                kwargs["attention_mask"] = mask
            logits = lm(**kwargs).logits.float()
        # Left padding puts every response at the end of its row: logits[:, j] predicts token width - tail + j + 1
        targets = ids[:, width - tail + 1:]
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return [float(logprobs[row, tail - 1 - length:].mean()) if length else 0.0 for row, length in enumerate(spans)]

    def _prefix_cache(self, prefix_ids: list[int]) -> "_Prefix":
        key = tuple(prefix_ids)
        if getattr(self, "_prefix_key", None) != key:
            import torch

            with torch.inference_mode():
                out = self._lm(input_ids=torch.tensor([prefix_ids]), use_cache=True, logits_to_keep=1)
            self._prefix, self._prefix_key = _Prefix(out.past_key_values), key
        return self._prefix


class _Prefix:
    """A computed system-prompt prefix; `expand(n)` gives a fresh cache for a batch of n rows."""

    def __init__(self, cache):
        self.cache = cache

    def expand(self, n: int):
        import copy

        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(n)
        return cache
