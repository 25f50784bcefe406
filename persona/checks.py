"""Machine checks from a spec's constraints, run on a response's text without any model.

A constraint may carry a `check:` block (see the schema); `check_text` returns what the text breaks:

    check = Check(forbidden_phrases=("guaranteed",), max_words=80)
    check_text(check, "Returns are guaranteed!")   # -> ["contains the forbidden phrase 'guaranteed'"]

Phrases match as substrings after Unicode case folding (unless `case_sensitive`), so "Guaranteed" and
"GUARANTEED" both match; patterns are Python regular expressions searched anywhere in the text.
Used by `persona.spec` (examples must pass their own spec's checks) and by the offline judge, once per
response, so compiled patterns are cached.

A pattern such as `(a+)+$` backtracks catastrophically: on "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab" it
would run for hours. The patterns of one check get PATTERN_SECONDS together, then `check_text` raises
PatternTimeout naming the pattern. `time_limit` is also what bounds template rendering (persona.templates).
"""

from __future__ import annotations

import re
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache

from persona.errors import PersonaError

PATTERN_SECONDS = 1.0  # all the patterns of one check on one text; a normal pattern takes microseconds


@dataclass(frozen=True)
class Check:
    forbidden_phrases: tuple[str, ...] = ()
    required_phrases: tuple[str, ...] = ()
    forbidden_patterns: tuple[str, ...] = ()
    required_patterns: tuple[str, ...] = ()
    max_words: int | None = None
    max_chars: int | None = None
    case_sensitive: bool = False
    source: str = field(default="", compare=False)  # where the check is written: "identities/a.yaml:12:7"


class PatternTimeout(PersonaError):
    """A pattern ran out of time on a text; `kind` is "forbidden" or "required", `index` its place."""

    def __init__(self, check: Check, kind: str, index: int, text: str):
        self.pattern = (check.forbidden_patterns if kind == "forbidden" else check.required_patterns)[index]
        self.kind, self.index = kind, index
        where = f"{check.source}: " if check.source else ""
        super().__init__(
            f"{where}the {kind} pattern {self.pattern!r} took more than {PATTERN_SECONDS:g} s on a "
            f"{len(text):,}-character text",
            hint=SLOW_PATTERN_HINT)


SLOW_PATTERN_HINT = ("the pattern backtracks catastrophically: avoid a repetition inside a repetition, such as "
                     "(a+)+ or (a|aa)*; e.g. write a+$ instead of (a+)+$")


class TimeLimitExceeded(Exception):
    """Raised inside a `time_limit` block when its time is up."""


def _on_alarm(signum, frame):
    raise TimeLimitExceeded()


@contextmanager
def time_limit(seconds: float):
    """Raise TimeLimitExceeded inside the block once `seconds` of wall-clock time have passed.

    Uses SIGALRM, which interrupts Python code and the `re` engine (it checks for signals while it
    backtracks) but not a single long C call. Signals only reach the main thread, where persona checks
    specs and renders templates; elsewhere (another thread, Windows, or while another ITIMER_REAL timer
    runs, e.g. an outer time_limit) the block runs without this limit and yields False.
    """
    if not (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
            and signal.getitimer(signal.ITIMER_REAL)[0] == 0):
        yield False
        return
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield True
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, previous)


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str, case_sensitive: bool = False) -> re.Pattern:
    return re.compile(pattern, 0 if case_sensitive else re.IGNORECASE)


def check_text(check: Check, text: str) -> list[str]:
    """Every way `text` breaks `check`, as short phrases; empty when it passes. Raises PatternTimeout
    when a pattern takes too long."""
    problems: list[str] = []
    fold = (lambda s: s) if check.case_sensitive else str.casefold
    folded = fold(text)
    for phrase in check.forbidden_phrases:
        if fold(phrase) in folded:
            problems.append(f"contains the forbidden phrase {phrase!r}")
    for phrase in check.required_phrases:
        if fold(phrase) not in folded:
            problems.append(f"lacks the required phrase {phrase!r}")
    if check.forbidden_patterns or check.required_patterns:
        problems += _check_patterns(check, text)
    if check.max_words is not None and (n := len(text.split())) > check.max_words:
        problems.append(f"is {n} words long (at most {check.max_words})")
    if check.max_chars is not None and (n := len(text)) > check.max_chars:
        problems.append(f"is {n} characters long (at most {check.max_chars})")
    return problems


def _check_patterns(check: Check, text: str) -> list[str]:
    problems: list[str] = []
    kind, index = "forbidden", 0  # the pattern running when time is up
    try:
        with time_limit(PATTERN_SECONDS):
            for index, pattern in enumerate(check.forbidden_patterns):
                if compile_pattern(pattern, check.case_sensitive).search(text):
                    problems.append(f"matches the forbidden pattern {pattern!r}")
            kind = "required"
            for index, pattern in enumerate(check.required_patterns):
                if not compile_pattern(pattern, check.case_sensitive).search(text):
                    problems.append(f"does not match the required pattern {pattern!r}")
    except TimeLimitExceeded:
        raise PatternTimeout(check, kind, index, text) from None
    return problems
