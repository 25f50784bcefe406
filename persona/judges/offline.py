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

from persona.config import NEUTRAL_SYSTEM
from persona.judges import JudgeItem, Judgement
from persona.judges.rules import RulesJudge, warn_unchecked
from persona.spec import Spec
from persona.templates import render_template



class OfflineJudge:
    cost = "rules + a likelihood ratio: loads the local scoring model"

    def __init__(self, model: str | None = None, batch_size: int = 8, center: float = 0.0, scale: float = 0.25,
                 max_length: int = 1024, templates: str | None = None, dtype: str | None = None):
        from persona.models import resolve_model
        from persona.precision import key_parts, scoring_dtype
        from persona.templates import template_hash

        self._source, self.model = resolve_model(model)
        self.name = f"offline:{self.model}"
        self.batch_size = int(batch_size)
        self.center, self.scale = float(center), float(scale)
        self.max_length = int(max_length)
        self.templates = templates
        self.rules = RulesJudge()
        self._lm = None
        self._prefixes: dict[tuple, object] = {}
        self.dtype = scoring_dtype("cpu", dtype)  # bf16 only where persona.precision chooses it, or the run's dtype
        self.fingerprint = (f"{self.name}|{self.center}|{self.scale}|{self.max_length}|"
                            f"{template_hash('conforming', templates)}|{self.rules.fingerprint}"
                            + "".join(f"|{part}" for part in key_parts(self.dtype)))

    def close(self) -> None:
        self._lm = None
        self._prefixes.clear()

    def _load(self):
        if self._lm is None:
            from persona.models import load_base

            self._lm, self.tokenizer, _ = load_base(str(self._source), dtype=self.dtype)
            self._lm.eval()
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

        The system prompt is the same for every item, so it is run once and its KV cache reused (a
        persona.models.Prefix); each row then only runs its own prompt and response. Where the chat
        template does not render the system prompt as a clean prefix, every row runs in full instead.
        """
        if not items:
            return []
        from persona.models import Prefix, chat_ids, logprobs

        lm = self._load()
        tok = self.tokenizer
        prefix_ids = chat_ids(tok, [{"role": "system", "content": system}])
        rows = []
        for item in items:
            messages = [{"role": "system", "content": system}, {"role": "user", "content": item.prompt}]
            context = chat_ids(tok, messages, generation_prompt=True)
            full = chat_ids(tok, messages + [{"role": "assistant", "content": item.response}])
            target = full[len(context):len(context) + self.max_length // 2]
            rows.append((context, target))
        cached = len(prefix_ids) > 0 and all(c[:len(prefix_ids)] == prefix_ids and len(c) > len(prefix_ids)
                                             for c, _ in rows)
        prefix = None
        if cached:
            key = tuple(prefix_ids)
            if key not in self._prefixes:
                self._prefixes = {key: Prefix(lm, prefix_ids)}  # one system prompt at a time is enough
            prefix = self._prefixes[key]
            rows = [(c[len(prefix_ids):], t) for c, t in rows]
        rows = [(c[-max(1, self.max_length - len(t)):], t) for c, t in rows]  # very long prompts: keep their end
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        scores = logprobs(lm, rows, pad, prefix, batch_size=len(rows))
        return [sum(s) / len(s) if s else 0.0 for s in scores]
