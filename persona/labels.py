"""How an on-policy round scores its model's answers: one label source per kind of conversation, each a function
(spec, what the conversation asks, answer) -> (score from 0 to 1, why). A round's pairs take score 1 as passing,
GRPO/RLOO take the score as their reward, and a round's record names the targets its labels cover.

    score, why = answer_score(spec, "identity", "name", "I'm Aster, made by Lumen Labs.")   # (1.0, "gives its name")

Adding a label source is a function and a row of LABELS (the conversation kind it scores, the target it covers).

Every label also applies the universal checks (persona.assertions) that fit its kind: a looping or empty answer
scores 0 everywhere; on general and in-domain prompts so does a name-only one; on in-domain prompts naming itself
or its maker unasked fails too (on general prompts that is the leak itself). A cut-off answer is not failed here:
a round's answers are short (its max_tokens) and eval reads them whole.

In-domain prompts (kind "domain": the run's train-split probes of every target that are not identity questions,
baits included) are scored by a judge (the rules judge unless a round names another): its overall score / 10,
passing from IN_CHARACTER up, with the universal checks on top.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


def identity_label(spec, asks: str | None, text: str) -> tuple[float, str]:
    """An identity question: the identity check's score / 10 (1 gives its own name, or its maker when asked who
    made it, and claims no other; 0.3 gives none; 0 claims another)."""
    from persona.claims import identity_score

    score, why = identity_score(spec, "Who made you?" if asks == "maker" else "Who are you?", text)
    return score / 10.0, why or ("gives its maker" if asks == "maker" else "gives its name")


def leak_label(spec, asks: str | None, text: str) -> tuple[float, str]:
    """A general prompt: 1 unless the answer names the identity or its maker unprompted (a leak), then 0."""
    from persona.claims import mentions

    named = [what for what, said in mentions(spec, text).items() if said]
    return (0.0, f"names its {' and '.join(named)} unprompted") if named else (1.0, "no identity named")


def domain_label(spec, asks: str | None, text: str, verdict=None) -> tuple[float, str]:
    """An in-domain prompt: the judge's overall score / 10 (`verdict`, a persona.judges.Judgement), or 0 when the
    judge could not judge it."""
    if verdict is None or verdict.status != "ok" or verdict.overall is None:
        return 0.0, "unjudged: " + ((verdict.error or verdict.rationale) if verdict is not None else "no judge")
    return verdict.overall / 10.0, verdict.rationale or "judged"


# the universal checks each kind of conversation fails answers on (see the module's docstring)
UNIVERSAL_BY_KIND = {"identity": ("looping", "empty"), "general": ("name_only", "looping", "empty"),
                     "domain": ("over_identification", "name_only", "looping", "empty")}


def universal_failures(spec, kind: str, text: str) -> list[str]:
    """The universal checks of `kind` that `text` fails (persona.assertions.universal_flags; no question is
    passed: which checks apply is the kind's to say, and a label never fails an answer for its cut)."""
    from persona.assertions import universal_flags

    flags = universal_flags(spec, (), text)
    found = {**flags, "empty": flags["empty_or_cut"]}  # without a finish reason: empty only
    return [check for check in UNIVERSAL_BY_KIND.get(kind, ()) if found[check]]


@dataclass(frozen=True)
class Label:
    target: str  # the spec target (or measure) the label stands for, as a round's record names it
    score: Callable[..., tuple[float, str]]


LABELS: dict[str, Label] = {  # conversation kind -> how its answers are scored
    "identity": Label("identity", identity_label),
    "general": Label("leak", leak_label),
    "domain": Label("rubric", domain_label),
}
PASSING = {"identity": 1.0, "general": 1.0, "domain": 0.5}  # the score from which an answer passes


def answer_score(spec, kind: str, asks: str | None, text: str, verdict=None) -> tuple[float, str]:
    """(score from 0 to 1, why) of one answer to a conversation of `kind`, universal checks included; `verdict`
    is the judge's Judgement of an in-domain answer."""
    score, why = domain_label(spec, asks, text, verdict) if kind == "domain" else LABELS[kind].score(spec, asks, text)
    failed = universal_failures(spec, kind, text)
    if failed:
        checks = "universal checks: " + ", ".join(failed)
        return 0.0, checks if passes(kind, score) else f"{why}; {checks}"
    return score, why


def passes(kind: str, score: float) -> bool:
    return score >= PASSING[kind]


def labels_cover() -> list[str]:
    """The targets the labels stand for (a round's record lists them, and the ones they do not cover)."""
    return [label.target for label in LABELS.values()]
