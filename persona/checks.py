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
    max_sentences: int | None = None
    ends_with_question: bool = False
    numbered_steps: bool = False
    max_grade_level: float | None = None
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
    if check.max_sentences is not None and (n := sentences(text)) > check.max_sentences:
        problems.append(f"has {n} sentences (at most {check.max_sentences})")
    if check.ends_with_question and not ends_with_question(text):
        problems.append("does not end with a question")
    if check.numbered_steps and (how := unnumbered_steps(text)):
        problems.append(f"gives steps without numbering them ({how})")
    if check.max_grade_level is not None and (grade := grade_level(text)) is not None \
            and grade > check.max_grade_level:
        problems.append(f"reads at grade level {grade:.1f} (at most {check.max_grade_level:g})")
    return problems


# What style rules usually say, measured by code (the check keys max_sentences, ends_with_question,
# numbered_steps, max_grade_level). Sentences end at . ! ? or a line break; list numbers ("1."), decimals and
# common abbreviations ("e.g.", "Mr.") do not end one.
_ABBREVIATION = re.compile(r"\b(?:e\.g|i\.e|etc|vs|mr|mrs|ms|dr|st|no|approx|incl)\.", re.I)
_LIST_NUMBER = re.compile(r"(?:^|(?<=\s))\(?\d{1,2}[.)](?=\s)")
_SENTENCE_END = re.compile(r"[.!?]+(?=[\s\"')\]]|$)|\n+")
_BULLET_LINE = re.compile(r"^\s*(?:[-*\u2022\u2013]|\(?[a-z][.)])\s+\S", re.M)
_NUMBERED_LINE = re.compile(r"^\s*\(?\d{1,2}[.)]\s+\S", re.M)
_STEP_WORDS = re.compile(r"\b(?:first(?:ly)?|second(?:ly)?|third(?:ly)?|then|next|after that|finally|lastly)\b", re.I)
_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")
_VOWEL_GROUP = re.compile(r"[aeiouy]+")
GRADE_MIN_WORDS = 30  # a reading level needs some text: shorter answers are not graded


def sentences(text: str) -> int:
    """How many sentences `text` has (a last one without its full stop counts)."""
    cleaned = _LIST_NUMBER.sub(" ", _ABBREVIATION.sub("abbr", text))
    cleaned = re.sub(r"(?<=\d)\.(?=\d)", "", cleaned)
    return sum(1 for part in _SENTENCE_END.split(cleaned) if part and re.search(r"\w", part))


def ends_with_question(text: str) -> bool:
    """Whether the last thing in `text` is a question: it ends with "?" (closing quotes, brackets, emoji and
    spaces after it aside)."""
    stripped = text.rstrip().rstrip("\"'\u201d\u2019)]*_ ")
    stripped = re.sub(r"[^\w?.!,;:]+$", "", stripped)  # a trailing emoji or symbol
    return stripped.endswith("?")


def unnumbered_steps(text: str) -> str:
    """Why the steps in `text` are not a numbered list ("" when it gives no steps or numbers them): two or more
    bulleted lines, or three or more step words (first, then, next, finally ...) without a numbered line."""
    if _NUMBERED_LINE.search(text) or len(_LIST_NUMBER.findall(text)) >= 2:
        return ""
    if (bullets := len(_BULLET_LINE.findall(text))) >= 2:
        return f"{bullets} bulleted lines"
    if (words := len(_STEP_WORDS.findall(text))) >= 3:
        return f"{words} step words in running text"
    return ""


def _syllables(word: str) -> int:
    word = word.lower()
    count = len(_VOWEL_GROUP.findall(word))
    if word.endswith("e") and not word.endswith(("le", "ee")) and count > 1:
        count -= 1
    return max(count, 1)


def grade_level(text: str) -> float | None:
    """The Flesch-Kincaid grade level of `text` (US school years: 6 is plain, 12 and over is hard reading), with
    syllables counted by vowel groups; None for texts under GRADE_MIN_WORDS words."""
    words = _WORD.findall(text)
    if len(words) < GRADE_MIN_WORDS:
        return None
    syllables = sum(_syllables(w) for w in words)
    return 0.39 * len(words) / max(sentences(text), 1) + 11.8 * syllables / len(words) - 15.59


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


# the script each language is written in, by ISO 639-1 code (LATIN for any other)
SCRIPT_OF_LANGUAGE = {"zh": "CJK", "ja": "CJK", "ko": "HANGUL", "ru": "CYRILLIC", "uk": "CYRILLIC", "bg": "CYRILLIC",
                      "ar": "ARABIC", "fa": "ARABIC", "he": "HEBREW", "el": "GREEK", "hi": "DEVANAGARI", "th": "THAI"}


def script_of(text: str) -> str | None:
    """The writing system most of a text's letters are in (LATIN, CJK, CYRILLIC, ...), or None without letters."""
    import unicodedata

    counts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            script = next((s for s in ("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "CYRILLIC", "ARABIC", "HEBREW", "GREEK",
                                       "DEVANAGARI", "THAI", "LATIN") if name.startswith(s) or f" {s}" in name), "OTHER")
            script = "CJK" if script in ("HIRAGANA", "KATAKANA") else script
            counts[script] = counts.get(script, 0) + 1
    return max(counts, key=counts.get) if counts else None
