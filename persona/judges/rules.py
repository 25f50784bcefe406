"""The `rules` judge: the spec's machine checks, run as code. No model, deterministic, instant.

What it scores:
  * every style rule and constraint with a `check:` (forbidden/required phrases and patterns, max words, chars
    or sentences, ends with a question, numbered steps, reading level): 10 when the response passes, 0 when it
    breaks it;
  * `identity`: 0 when the response claims another model's name or another maker ("I'm ChatGPT",
    "I was trained by Google", "my developers at OpenAI", "Soy ChatGPT", "我由OpenAI开发"), in English,
    Spanish, French, German, Chinese or Turkish, however it is disguised (look-alike letters, invisible
    characters, "Chat GPT", markup); a denial counts only where its negation governs the claim ("I'm not
    ChatGPT", "Ich bin nicht ChatGPT"), and merely naming another company is no claim ("Unlike ChatGPT,
    which OpenAI made, I'm Aster"); 3 when asked who it is (or who made it) and it does not say its own
    name (or maker); else 10;
  * style vocabulary: a word from `style.vocabulary.avoided` caps the overall score at 4;
  * language: an answer in another script than the identity's `language` (and the user's) caps it at 4;
  * an empty response scores 0 everywhere.
The identity checks live in persona.claims (shared with training and eval).
What it misses: everything without a check - traits, style rules, ethics, constraints written only in
prose - which it reports as unchecked (score None). The `offline` judge adds a model-based score for those.
Its overall score is the lowest score it gave (10 when nothing it can check is broken).
"""

from __future__ import annotations

import logging
from typing import Iterator, Sequence

from persona.checks import check_text
from persona.claims import identity_score
from persona.checks import SCRIPT_OF_LANGUAGE, script_of
from persona.judges import JudgeItem, Judgement
from persona.spec import IDENTITY_TARGET, Spec

log = logging.getLogger("persona")
_warned: set[str] = set()

class RulesJudge:
    name = "rules"
    cost = "instant, no model"
    fingerprint = "rules|4"  # bump when the rules change, so cached judgements are redone

    def close(self) -> None:
        pass

    def judge(self, spec: Spec, items: Sequence[JudgeItem]) -> Iterator[tuple[JudgeItem, Judgement]]:
        warn_unchecked(spec, self.name)
        for item in items:
            yield item, self.judge_one(spec, item.prompt, item.response)

    def judge_one(self, spec: Spec, prompt: str, response: str) -> Judgement:
        targets = spec.targets()
        scores: dict[str, float | None] = {t.id: None for t in targets}
        if not response.strip():
            return Judgement("ok", 0.0, {t.id: 0.0 for t in targets}, "empty response", "empty response")
        notes: list[str] = []
        for target_id, check in spec.checks():
            broken = check_text(check, response)
            scores[target_id] = 0.0 if broken else 10.0
            notes += [f"{target_id}: {b}" for b in broken]
        if spec.identity is not None:
            score, note = identity_score(spec, prompt, response)
            scores[IDENTITY_TARGET] = score
            if note:
                notes.append(f"identity: {note}")
        checked = [s for s in scores.values() if s is not None]
        overall = min(checked) if checked else 10.0
        avoided = [w for w in spec.style.avoided if w.casefold() in response.casefold()]
        if avoided:
            overall = min(overall, 4.0)
            notes.append(f"style: uses avoided vocabulary {', '.join(map(repr, avoided))}")
        mismatch = language_mismatch(spec, prompt, response)
        if mismatch:
            overall = min(overall, 4.0)
            notes.append(f"language: {mismatch}")
        unchecked = [k for k, v in scores.items() if v is None]
        rationale = "; ".join(notes) if notes else "passes every machine check"
        raw = rationale + (f" | not machine-checkable: {', '.join(unchecked)}" if unchecked else "")
        return Judgement("ok", overall, scores, rationale, raw)


def unchecked_targets(spec: Spec) -> list[str]:
    """Targets no machine check covers: traits, ethics, style rules and constraints without `check:`."""
    checked = {target_id for target_id, _ in spec.checks()}
    if spec.identity is not None:
        checked.add(IDENTITY_TARGET)
    return [t.id for t in spec.targets() if t.id not in checked]


def warn_unchecked(spec: Spec, judge_name: str, fallback: str = "") -> None:
    """Say once per spec and judge what the machine checks cannot see."""
    missing = unchecked_targets(spec)
    if missing and (spec.spec_hash, judge_name) not in _warned:
        _warned.add((spec.spec_hash, judge_name))
        log.warning("%s judge: no machine check covers %s of %s: %s%s", judge_name, len(missing), spec.name,
                    ", ".join(missing), fallback or " (their scores stay null; add `check:` blocks or use --judge llm)")


def language_mismatch(spec: Spec, prompt: str, response: str) -> str:
    """A note when the response is in another script than both the identity's language and the user's."""
    if spec.identity is None or not spec.identity.language:
        return ""
    expected = SCRIPT_OF_LANGUAGE.get(spec.identity.language.split("-")[0].lower(), "LATIN")
    got, asked = script_of(response), script_of(prompt)
    if got is None or got in (expected, asked):
        return ""
    return f"answers in {got.title()} script; the identity speaks {spec.identity.language} and the user wrote {(asked or 'no').title()} script"
