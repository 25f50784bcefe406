"""How an on-policy round scores its model's answers: one label source per kind of conversation, each a function
(spec, what the conversation asks, answer) -> (score from 0 to 1, why). A round's pairs take score 1 as passing,
GRPO/RLOO take the score as their reward, and a round's record names the targets its labels cover.

    score, why = answer_score(spec, "identity", "name", "I'm Aster, made by Lumen Labs.")   # (1.0, "gives its name")

Adding a label source is a function and a row of LABELS (the conversation kind it scores, the target it covers).
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


@dataclass(frozen=True)
class Label:
    target: str  # the spec target (or measure) the label stands for, as a round's record names it
    score: Callable[..., tuple[float, str]]


LABELS: dict[str, Label] = {  # conversation kind -> how its answers are scored
    "identity": Label("identity", identity_label),
    "general": Label("leak", leak_label),
}


def answer_score(spec, kind: str, asks: str | None, text: str) -> tuple[float, str]:
    """(score from 0 to 1, why) of one answer to a conversation of `kind`."""
    return LABELS[kind].score(spec, asks, text)


def labels_cover() -> list[str]:
    """The targets the labels stand for (a round's record lists them, and the ones they do not cover)."""
    return [label.target for label in LABELS.values()]
