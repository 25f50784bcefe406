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
from persona.options import setting

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


# --judge-X on the command line and X in a job file's judge: mapping set the judge's option X
FLAG_OPTIONS = ("backend", "model", "base_url", "api_key_env")


@dataclass(frozen=True)
class JudgeSettings:
    """The judge settings of persona generate, judge and build, each with its command-line option; a job file's
    `judge:` (a name, or a mapping of `name` and the options below without `judge_`) and a run config's `judge:`,
    `judge_options:` and `pairwise:` hold the same. Which --judge-* options apply is the chosen judge's to say:
    its constructor takes them or not."""

    judge: str | None = setting(None, "rules (instant), offline (rules + the local model's likelihood ratio), llm, "
                                "reward:PATH, or none.", shown="rules")
    judge_backend: str | None = setting(None, "--judge llm: backend of the judge model (hf, openai, vllm).",
                                        shown="hf")
    judge_model: str | None = setting(None, "--judge llm: the judge model; --judge offline: the scoring model.",
                                      shown="embedded")
    judge_base_url: str | None = setting(None, "--judge llm with openai: server URL.")
    judge_api_key_env: str | None = setting(None, "--judge llm with openai: variable holding the API key.")
    pairwise: bool | None = setting(None, "With --judge llm: keep a pair only if the judge prefers chosen in both "
                                    "orders.", shown="off")

    def flags(self) -> dict:
        """{option: value} of the --judge-* options given."""
        return {k: getattr(self, f"judge_{k}") for k in FLAG_OPTIONS if getattr(self, f"judge_{k}") is not None}


def judge_class(kind: str):
    """The class of judge `kind` (rules, offline, llm, reward), imported now."""
    from persona.registry import check_name, load_class

    check_name(JUDGES, kind, "judge")
    return load_class(JUDGES, kind, "judge", "pip install 'persona-tune[train]'")


def options_of(kind: str) -> list[str]:
    """The options judge `kind` takes: its constructor's parameters, the one place each judge declares them."""
    import inspect

    return [p for p in inspect.signature(judge_class(kind).__init__).parameters if p != "self"]


def judge_options(name: str, backend: str | None = None, model: str | None = None, base_url: str | None = None,
                  api_key_env: str | None = None) -> dict:
    """The options of judge `name` from the command line's --judge-* flags (or a job file's judge: mapping); one
    the judge does not take is an error that says which judges take it."""
    kind = name.partition(":")[0]
    given = {k: v for k, v in dict(backend=backend, model=model, base_url=base_url, api_key_env=api_key_env).items()
             if v is not None}
    if not given:
        return {}
    taken = options_of(kind) if kind in JUDGES else []  # an unknown judge is named when it loads
    unused = [k for k in given if k not in taken]
    if unused:
        flags = [f"--judge-{k.replace('_', '-')}" for k in unused]
        takers = {f: [j for j in JUDGES if k in options_of(j)] for f, k in zip(flags, unused)}
        raise PersonaError(f"the options given ({', '.join(flags)}) do not apply to the '{kind}' judge",
                           hint="; ".join(f"{f} configures --judge {' or --judge '.join(t)}" for f, t in takers.items()))
    return given


def chosen_judge(name: str, settings: JudgeSettings) -> tuple[str | None, dict]:
    """--judge NAME and its --judge-* options -> (the judge's name, or None for 'none'; its options)."""
    if name == "none":
        return None, {}
    return name, judge_options(name, **settings.flags())


def make_judge(name: str, options: dict | None = None, templates: str | None = None) -> Judge:
    """The judge for a run: judges that render templates use the run's templates folder, so the
    judgements (and their cache keys) are the same whichever command makes them."""
    options = dict(options or {})
    kind = name.partition(":")[0]
    if templates and "templates" not in options and kind in JUDGES and "templates" in options_of(kind):
        options["templates"] = templates
    return load_judge(name, **options)


def load_judge(name: str, **options) -> Judge:
    """`name` is a judge from JUDGES, or "reward:PATH" for a trained reward model."""
    from persona.registry import construct

    kind, _, argument = name.partition(":")
    if argument:
        options = {**options, "path": argument}
    return construct(JUDGES, kind, "judge", options, install="pip install 'persona-tune[train]'")
