"""Judges: (spec, prompt, response) -> a score per target, an overall score, a rationale and the raw reply.

    from persona.judges import JudgeItem, load_judge
    judge = load_judge("offline")                  # rules + persona likelihood ratio, no API
    judge = load_judge("rules")                    # machine checks only (no model at all)
    judge = load_judge("llm", backend="openai", model="gpt-4o-mini")   # any backend, the judge template
    judge = make_judge("llm", judge_options("llm", backend="openai", model="gpt-4o-mini"), templates="templates")
    for item, verdict in judge.judge(spec, [JudgeItem("r1", "Who are you?", "I'm Aster.")]):
        verdict.scores["identity"], verdict.overall, verdict.rationale
    if isinstance(judge, PairwiseJudge):           # the llm judge also compares two responses
        judge.prefer(spec, [("k", "Who are you?", "I'm Aster.", "I'm ChatGPT.")])   # {"k": "a"}

Scores run from 0 (clearly broken) to 10 (fully kept); a target a judge cannot assess scores None,
and `Judgement.unchecked` names those. A judge that cannot produce a verdict returns status "unjudged"
with the reason and the raw reply, never a silent None. Which judge catches what is in docs/guide.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterator, Protocol, Sequence, runtime_checkable

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


@runtime_checkable
class PairwiseJudge(Protocol):
    """A judge that can also say which of two responses keeps the persona better (asked in both orders)."""

    swap_consistency: float | None  # share of pairs judged the same in both orders, after `prefer`

    def prefer(self, spec, pairs: Sequence[tuple[str, str, str, str]]) -> dict[str, str | None]: ...


def pairwise(judge: Judge) -> PairwiseJudge:
    """`judge` as a PairwiseJudge, or the error --pairwise gives for one that cannot compare."""
    if not isinstance(judge, PairwiseJudge):
        raise PersonaError(f"--pairwise needs a judge that compares two responses; '{judge.name}' does not",
                           hint="use --judge llm (with --judge-backend and --judge-model)")
    return judge


def judge_options(name: str, backend: str | None = None, model: str | None = None, base_url: str | None = None,
                  api_key_env: str | None = None) -> dict:
    """The options of judge `name` from the command line's --judge-* flags; flags that do not apply to it
    are an error (--judge-model also picks the offline judge's scoring model)."""
    kind = name.partition(":")[0]
    if kind == "llm":
        options = dict(backend=backend or "hf", model=model, base_url=base_url, api_key_env=api_key_env)
    elif kind == "offline" and not any((backend, base_url, api_key_env)):
        options = dict(model=model)
    elif any((backend, model, base_url, api_key_env)):
        raise PersonaError(f"--judge-backend/--judge-model/... do not apply to the '{kind}' judge",
                           hint="they configure --judge llm (and --judge-model the offline judge's scoring model)")
    else:
        options = {}
    return {k: v for k, v in options.items() if v is not None}


def make_judge(name: str, options: dict | None = None, templates: str | None = None) -> Judge:
    """The judge for a run: judges that render templates use the run's templates folder, so the
    judgements (and their cache keys) are the same whichever command makes them."""
    options = dict(options or {})
    if name.partition(":")[0] in ("offline", "llm") and templates and "templates" not in options:
        options["templates"] = templates
    return load_judge(name, **options)


def load_judge(name: str, **options) -> Judge:
    """`name` is a judge from JUDGES, or "reward:PATH" for a trained reward model."""
    from persona.registry import construct

    kind, _, argument = name.partition(":")
    if argument:
        options = {**options, "path": argument}
    return construct(JUDGES, kind, "judge", options, install="pip install 'persona-tune[train]'")
