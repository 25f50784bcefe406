"""Judges: (spec, prompt, response) -> a score per target, an overall score, a rationale and the raw reply.

    from persona.judges import JudgeItem, load_judge
    judge = load_judge("offline")                  # rules + persona likelihood ratio, no API
    judge = load_judge("rules")                    # machine checks only (no model at all)
    judge = load_judge("llm", backend="openai", model="gpt-4o-mini")   # any backend, the judge template
    for item, verdict in judge.judge(spec, [JudgeItem("r1", "Who are you?", "I'm Aster.")]):
        verdict.scores["identity"], verdict.overall, verdict.rationale

Scores run from 0 (clearly broken) to 10 (fully kept); a target a judge cannot assess scores None,
and `Judgement.unchecked` names those. A judge that cannot produce a verdict returns status "unjudged"
with the reason and the raw reply, never a silent None. Which judge catches what is in the README.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import asdict, dataclass, field
from typing import Iterator, Protocol, Sequence

from persona.errors import PersonaError

JUDGES: dict[str, str] = {
    "rules": "persona.judges.rules:RulesJudge",
    "offline": "persona.judges.offline:OfflineJudge",
    "llm": "persona.judges.llm:LLMJudge",
    "reward": "persona.judges.reward:RewardJudge",
}
IN_CHARACTER = 5.0  # overall >= this counts as in character (calibration, KTO labels, agreement)


@dataclass(frozen=True)
class JudgeItem:
    key: str  # the response record's id
    prompt: str
    response: str


@dataclass(frozen=True)
class Judgement:
    status: str  # "ok" | "unjudged"
    overall: float | None = None
    scores: dict = field(default_factory=dict)  # target id -> 0..10, or None when not assessed
    rationale: str = ""
    raw: str = ""  # the judge's own reply, or its working (which checks failed, the likelihood ratio)
    error: str = ""

    @property
    def unchecked(self) -> list[str]:
        return [k for k, v in self.scores.items() if v is None]

    def to_dict(self) -> dict:
        return asdict(self)


class Judge(Protocol):
    name: str  # recorded with every judgement, e.g. "offline:SmolLM2-135M-Instruct"
    fingerprint: str  # everything the verdicts depend on besides the spec: judgements are cached by it

    def judge(self, spec, items: Sequence[JudgeItem]) -> Iterator[tuple[JudgeItem, Judgement]]: ...

    def close(self) -> None: ...


def load_judge(name: str, **options) -> Judge:
    """`name` is a judge from JUDGES, or "reward:PATH" for a trained reward model."""
    kind, _, argument = name.partition(":")
    if kind not in JUDGES:
        close = difflib.get_close_matches(kind, list(JUDGES), n=1)
        raise PersonaError(f"unknown judge '{name}'",
                           hint=(f"did you mean '{close[0]}'? " if close else "") + "judges: " + ", ".join(JUDGES))
    if argument:
        options = {**options, "path": argument}
    module_name, class_name = JUDGES[kind].split(":")
    options = {k: v for k, v in options.items() if v is not None}
    try:
        return getattr(importlib.import_module(module_name), class_name)(**options)
    except ImportError as e:
        raise PersonaError(f"judge '{kind}' needs the package '{e.name}', which is not installed",
                           hint="pip install 'persona[train]'") from None
    except TypeError as e:
        import inspect

        cls = getattr(importlib.import_module(module_name), class_name)
        accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        unknown = [k for k in options if k not in accepted]
        if not unknown:
            raise
        raise PersonaError(f"judge '{kind}' has no option '{unknown[0]}'", hint=f"its options: {', '.join(accepted)}")
