"""What code can see in an answer, without any model: a behaviour test's machine assertions (the spec's `tests:`)
and the universal checks every in-domain or general answer gets.

    failure = assertion_failure(Assertion("ends-with", "?"), "Four. What is 13 x 4?")   # None: it holds
    flags = universal_flags(spec, messages, text, finish_reason)   # {"over_identification": False, ...}

Universal checks (each True when the answer has the problem):
  over_identification  it names itself or its maker where the user did not ask who it is or who made it
  name_only            it names itself (or offers help) and gives no help: under NAME_ONLY_WORDS words remain
                       once its name, its maker, greetings and offers to help are taken out
  looping              it repeats itself: one word LOOP_WORD_RUN times in a row, a phrase of 2-6 words three
                       times back to back, or a run of LOOP_NGRAM words LOOP_REPEATS times anywhere
  empty_or_cut         nothing but whitespace, or cut off at the token limit (finish_reason "length")
"""

from __future__ import annotations

import re
from collections import Counter

from persona.checks import (PATTERN_SECONDS, SCRIPT_OF_LANGUAGE, SLOW_PATTERN_HINT, TimeLimitExceeded, script_of,
                            sentences, time_limit)
from persona.errors import PersonaError

NAME_ONLY_WORDS = 8
LOOP_NGRAM, LOOP_REPEATS, LOOP_WORD_RUN = 4, 3, 4
UNIVERSAL = ("over_identification", "name_only", "looping", "empty_or_cut")
WORD = re.compile(r"[\w']+")
OFFER = re.compile(r"\b(how (can|may|could) i (help|assist|be of)|(happy|glad|delighted|here) to (help|assist)|"
                   r"what can i do for you)\b", re.I)
# greetings and offers to help: what a name-only answer is made of besides the name
FILLER = re.compile(r"\b(hi|hello|hey|there|i'?m|i am|my name is|this is|here|happy|glad|delighted|to|help|assist|"
                    r"you|your|with|how|can|could|may|i|what|do|for|today|anything|else|else\?|a|an|the|and|of|is|"
                    r"it|me|let|know|am|be|of|at|service|welcome|thanks|thank|made|by|from|assistant|ai|virtual|"
                    r"customer|team|question|questions|need|today's|ask|away|glad|pleased|sure|great|ready|so|"
                    r"just|on|in|would|like|if|any|have|has|what's|that|this|hear|support|mean|all|right)\b", re.I)


def _phrases(value) -> tuple[str, ...]:
    return value if isinstance(value, tuple) else (value,)


def _search(pattern: str, text: str, where: str):
    try:
        with time_limit(PATTERN_SECONDS):
            return re.search(pattern, text)
    except TimeLimitExceeded:
        raise PersonaError(f"{where}: the pattern {pattern!r} took more than {PATTERN_SECONDS:g} s on a "
                           f"{len(text):,}-character answer", hint=SLOW_PATTERN_HINT) from None


def assertion_failure(assertion, text: str, where: str = "") -> str | None:
    """None when `assertion` (persona.spec.Assertion) holds for the answer `text`, else what it breaks. A pattern
    that runs out of time is a PersonaError naming `where` (the test)."""
    kind, value, folded = assertion.kind, assertion.value, text.casefold()
    if kind == "contains":
        missing = [p for p in _phrases(value) if p.casefold() not in folded]
        return f"does not contain {', '.join(map(repr, missing))}" if missing else None
    if kind == "not-contains":
        found = [p for p in _phrases(value) if p.casefold() in folded]
        return f"contains {', '.join(map(repr, found))}" if found else None
    if kind == "any-of":
        return None if any(p.casefold() in folded for p in value) else f"contains none of {', '.join(map(repr, value))}"
    if kind in ("regex", "not-regex"):
        match = _search(value, text, where)
        if kind == "regex":
            return None if match else f"does not match {value!r}"
        return f"matches {value!r} ({match.group()[:40]!r})" if match else None
    if kind == "starts-with":
        return None if folded.strip().startswith(value.casefold()) else f"does not start with {value!r}"
    if kind == "ends-with":
        return None if folded.strip().endswith(value.casefold()) else f"does not end with {value!r}"
    if kind == "max-words":
        words = len(text.split())
        return None if words <= value else f"has {words} words (at most {value})"
    if kind == "max-sentences":
        count = sentences(text)
        return None if count <= value else f"has {count} sentences (at most {value})"
    if kind == "language":
        expected = SCRIPT_OF_LANGUAGE.get(value.split("-")[0].lower(), "LATIN")
        got = script_of(text)
        return None if got in (None, expected) else f"is in {got.title()} script, not {value}'s"
    from persona.spec import ASSERTIONS

    raise PersonaError(f"{where}: unknown assertion '{kind}'", hint="assertions: " + ", ".join(sorted(ASSERTIONS)))


# questions about what it is (a person? a bot?) or challenges about who made it: naming itself answers them
ASKS_NATURE = re.compile(r"\b(real (person|human|people)|human being|an? (human|person|bot|robot|machine|ai)\b|"
                         r"(talking|chatting|speaking) (to|with) (a|an|the) |(trained|made|built|created|developed) "
                         r"(you|by)\b|pretend(ing)? to be)", re.I)


def asks_who(messages) -> bool:
    """Whether the user's last message asks who the assistant is or who made it (or what it is: a person, a bot)."""
    from persona.claims import IDENTITY_QUESTION, MAKER_QUESTION

    question = messages[-1]["content"] if messages else ""
    return bool(IDENTITY_QUESTION.search(question) or MAKER_QUESTION.search(question) or ASKS_NATURE.search(question))


def universal_flags(spec, messages, text: str, finish_reason: str | None = None) -> dict[str, bool]:
    """{check: True when the answer has that problem} for the UNIVERSAL checks (see the module's docstring)."""
    from persona.claims import mentions

    named = spec.identity is not None and any(mentions(spec, text).values())
    asked = asks_who(messages)
    return {"over_identification": named and not asked,
            "name_only": not asked and name_only(spec, text),
            "looping": looping(text),
            "empty_or_cut": not text.strip() or finish_reason == "length"}


# what a universal problem does to a judge's overall score (persona.judgements.with_universal): a name-only,
# looping or empty answer is as bad as any (0); naming itself unasked is out of character (below IN_CHARACTER, 5)
# but better than no help at all. A cut-off answer is flagged, not capped: the build never chooses one, and trims
# a cut-off replay answer to its last full sentence.
UNIVERSAL_CAPS = {"over_identification": 4.0, "name_only": 0.0, "looping": 0.0}


def universal_problems(spec, prompt: str, text: str, finish_reason: str | None = None,
                       context: tuple = ()) -> list[str]:
    """The UNIVERSAL checks an answer to `prompt` (after the turns in `context`) fails, in UNIVERSAL's order."""
    flags = universal_flags(spec, [*context, {"role": "user", "content": prompt}], text, finish_reason)
    return [name for name in UNIVERSAL if flags[name]]


def capped(overall: float | None, problems: list[str]) -> float | None:
    """A judge's overall score with UNIVERSAL_CAPS applied for the problems found (None stays None)."""
    caps = [UNIVERSAL_CAPS[p] for p in problems if p in UNIVERSAL_CAPS]
    if overall is None or not caps:
        return overall
    return min(overall, *caps)


def name_only(spec, text: str) -> bool:
    """It names itself (or its maker) or offers help, and under NAME_ONLY_WORDS words of anything else remain."""
    if not text.strip():
        return False
    rest = text
    if spec.identity is not None:
        for name in (spec.identity.name, *spec.identity.aliases, spec.identity.maker or ""):
            if name:
                rest = re.sub(re.escape(name), " ", rest, flags=re.I)
    if rest == text and not OFFER.search(text):
        return False
    return len(WORD.findall(FILLER.sub(" ", rest))) < NAME_ONLY_WORDS


def looping(text: str) -> bool:
    """It repeats itself: one word LOOP_WORD_RUN times in a row, a phrase of 2 to 6 words three times back to back
    ("Northwind Bank Northwind Bank Northwind Bank"), or a run of LOOP_NGRAM words LOOP_REPEATS times anywhere."""
    words = [w.casefold() for w in WORD.findall(text)]
    run = 1
    for a, b in zip(words, words[1:]):
        run = run + 1 if a == b else 1
        if run >= LOOP_WORD_RUN:
            return True
    for n in range(2, 7):
        for i in range(len(words) - 3 * n + 1):
            if words[i:i + n] == words[i + n:i + 2 * n] == words[i + 2 * n:i + 3 * n]:
                return True
    grams = Counter(tuple(words[i:i + LOOP_NGRAM]) for i in range(len(words) - LOOP_NGRAM + 1))
    return bool(grams) and max(grams.values()) >= LOOP_REPEATS


def machine_failures(test, text: str) -> list[str] | None:
    """What the answer `text` breaks of a test's machine assertions ([] when all hold); None when the test has none
    (only a rubric: code cannot judge it)."""
    if not test.assertions:
        return None
    return [f"{a.kind}: {why}" for a in test.assertions if (why := assertion_failure(a, text, test.source))]
