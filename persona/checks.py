"""Machine checks from a spec's constraints, run on a response's text without any model.

A constraint may carry a `check:` block (see the schema); `check_text` returns what the text breaks:

    check = Check(forbidden_phrases=("guaranteed",), max_words=80)
    check_text(check, "Returns are guaranteed!")   # -> ["contains the forbidden phrase 'guaranteed'"]

Phrases match as substrings after Unicode case folding (unless `case_sensitive`), so "Guaranteed" and
"GUARANTEED" both match; patterns are Python regular expressions searched anywhere in the text.
Used by `persona.spec` (examples must pass their own spec's checks) and by the offline judge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    forbidden_phrases: tuple[str, ...] = ()
    required_phrases: tuple[str, ...] = ()
    forbidden_patterns: tuple[str, ...] = ()
    required_patterns: tuple[str, ...] = ()
    max_words: int | None = None
    max_chars: int | None = None
    case_sensitive: bool = False


def check_text(check: Check, text: str) -> list[str]:
    """Every way `text` breaks `check`, as short phrases; empty when it passes."""
    problems: list[str] = []
    fold = (lambda s: s) if check.case_sensitive else str.casefold
    flags = 0 if check.case_sensitive else re.IGNORECASE
    folded = fold(text)
    for phrase in check.forbidden_phrases:
        if fold(phrase) in folded:
            problems.append(f"contains the forbidden phrase {phrase!r}")
    for phrase in check.required_phrases:
        if fold(phrase) not in folded:
            problems.append(f"lacks the required phrase {phrase!r}")
    for pattern in check.forbidden_patterns:
        if re.search(pattern, text, flags):
            problems.append(f"matches the forbidden pattern {pattern!r}")
    for pattern in check.required_patterns:
        if not re.search(pattern, text, flags):
            problems.append(f"does not match the required pattern {pattern!r}")
    if check.max_words is not None and (n := len(text.split())) > check.max_words:
        problems.append(f"is {n} words long (at most {check.max_words})")
    if check.max_chars is not None and (n := len(text)) > check.max_chars:
        problems.append(f"is {n} characters long (at most {check.max_chars})")
    return problems
