"""What eval asks: the held-out probe prompts of the run, the identity questions in both contexts, the same under
four attacks, and general questions (the leak) - each an EvalItem. The banks ship in persona/data/."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from persona.errors import PersonaError
from persona.eval.settings import EvalSettings


DATA = Path(__file__).parent.parent / "data"


CONTEXTS = ("default", "empty")  # no system message (the template's default) / an explicit empty one
TEST_TOKENS = 200  # a behaviour test's answer may run as long as a deployed model's


def attack_bank() -> dict:
    return json.loads((DATA / "eval_attacks.json").read_text(encoding="utf-8"))


def _attacks() -> dict[str, Callable[[str, int], list[dict]]]:
    """attack name -> (question, its number) -> the conversation that asks it under attack."""
    bank = attack_bank()
    return {
        "break": lambda q, i: [{"role": "user", "content": f"{q} {bank['break'][i % len(bank['break'])]}"}],
        "multi-turn": lambda q, i: bank["multi-turn"] + [{"role": "user", "content": q}],
        "prefilled": lambda q, i: bank["prefilled"] + [{"role": "user", "content": q}],
        "injection": lambda q, i: [{"role": "user", "content": bank["injection"] + q}],
    }


ATTACKS = _attacks()


@dataclass(frozen=True)
class EvalItem:
    id: str
    kind: str  # probe | test | origin | attack | leak
    messages: tuple
    asks: str | None = None  # origin/attack: "name" or "maker"
    attack: str | None = None
    target: str | None = None  # probe: the target the prompt was written for
    context: str = "default"  # default: no system message; empty: an empty system message
    max_tokens: int | None = None  # longer than the settings' where the spec's length checks need it
    test: str | None = None  # test: the id of the spec's behaviour test

    @property
    def prompt(self) -> str:
        return self.messages[-1]["content"]


def data_lines(name: str) -> list[str]:
    return [line.strip() for line in (DATA / name).read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]


def identity_questions() -> list[tuple[str, str]]:
    """(asks, question) pairs from persona/data/eval_identity.txt."""
    return [tuple(line.split("\t", 1)) for line in data_lines("eval_identity.txt")]


def general_questions() -> list[str]:
    """The held-out general questions of the leak measure (persona/data/eval_general.txt)."""
    return data_lines("eval_general.txt")


def held_out_prompts(spec, run, templates: str | None) -> list:
    """The eval split of the run's probe prompts (as its prompts stage saved them); without a run, the split
    persona would make for this spec without synthesis."""
    from persona.prompts import REPLAY_SOURCE, PromptRecord, planned_prompts

    if run is not None and "prompts" in (run.info().get("current") or {}):
        records = [PromptRecord.from_dict(r) for r in run.current("prompts")]
    else:
        records = planned_prompts(spec, templates)
    held_out = [r for r in records if r.split == "eval" and r.source != REPLAY_SOURCE]
    if not held_out:
        raise PersonaError(f"{spec.path}: no held-out probe prompts (the eval split is empty)",
                           hint="run `persona generate SPEC` with --eval-fraction above 0 and pass --run RUN_DIR, "
                                "or add more probes.seeds to the spec")
    return held_out


def probe_max_tokens(spec, settings: EvalSettings) -> int:
    """Probe answers may be as long as the spec's length checks allow (about 1.4 tokens a word), so a model
    that writes too much is seen breaking them."""
    words = [check.max_words for _, check in spec.checks() if check.max_words]
    return max([settings.max_tokens] + [math.ceil(1.4 * w) + 16 for w in words])


def _in(context: str, messages: list[dict]) -> tuple:
    return tuple(([{"role": "system", "content": ""}] if context == "empty" else []) + list(messages))


def build_items(spec, probes: list, limit: int | None, settings: EvalSettings = EvalSettings()) -> list[EvalItem]:
    from persona.store import input_key

    longest = probe_max_tokens(spec, settings)
    items = [EvalItem(input_key("probe", p.text), "probe", ({"role": "user", "content": p.text},), target=p.target,
                      max_tokens=longest if longest != settings.max_tokens else None)
             for p in probes[:limit]]
    # the spec's behaviour tests, answered with a deployment's room (a quick run, --limit: with --max-tokens)
    test_tokens = settings.max_tokens if limit else max(TEST_TOKENS, settings.max_tokens)
    for test in spread(list(spec.tests), limit):
        items.append(EvalItem(input_key("test", test.id, test.messages), "test", test.messages,
                              target=",".join(test.targets), max_tokens=test_tokens, test=test.id))
    if spec.identity is not None:
        # attacks vary with each question's place in the whole list: a quick run asks the same items, fewer
        questions = spread(list(enumerate((a, q) for a, q in identity_questions() if a == "name" or spec.identity.maker)), limit)
        for context in CONTEXTS:
            for _, (asks, q) in questions:
                messages = _in(context, [{"role": "user", "content": q}])
                key = input_key("origin", q) if context == "default" else input_key("origin", context, q)
                items.append(EvalItem(key, "origin", messages, asks, context=context))
        for attack, make in ATTACKS.items():
            for n, (asks, q) in questions:
                messages = tuple(make(q, n))
                items.append(EvalItem(input_key("attack", attack, messages), "attack", messages, asks, attack))
        for q in spread(general_questions(), limit):
            items.append(EvalItem(input_key("leak", q), "leak", ({"role": "user", "content": q},)))
    return items


def spread(rows: list, limit: int | None) -> list:
    """At most `limit` of `rows`, evenly spaced, so that a quick run still asks for both the name and the maker."""
    if limit is None or limit >= len(rows):
        return rows
    return [rows[i * len(rows) // limit] for i in range(limit)]
