"""Reading a judge model's reply: JSON if at all possible, tolerant of what models actually write.

    parse_verdict('```json\\n{"scores": {"warm": "7.5"}, "overall": 8}\\n```', ["warm", "brief"])
    -> Verdict(overall=8.0, scores={"warm": 7.5, "brief": None}, rationale="", missing=["brief"])

Accepted: code fences, text around the JSON, numbers as strings ("7.5", "8/10"), scores at the top level
instead of under "scores", another scale (0-1 or 0-100, detected from the values; 1-5 when the reply
says so with a "scale" key). Rejected with ParseError (the caller retries once, then marks the record
unjudged, keeping the raw reply): no JSON object, no scores at all, scores out of range after scaling.
Missing target scores are listed, not invented; a missing overall is the mean of the scores given.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field


class ParseError(ValueError):
    pass


@dataclass(frozen=True)
class Verdict:
    overall: float
    scores: dict = field(default_factory=dict)
    rationale: str = ""
    missing: list = field(default_factory=list)


def find_json_object(text: str) -> dict:
    """The first balanced {...} in `text` that parses as a JSON object (code fences and prose ignored)."""
    text = re.sub(r"```(?:json)?", "", text)
    start = text.find("{")
    while start != -1:
        depth, in_string, escaped = 0, False, False
        for end in range(start, len(text)):
            ch = text[end]
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    try:
                        value = json.loads(text[start:end + 1])
                    except json.JSONDecodeError:
                        break
                    if isinstance(value, dict):
                        return value
                    break
        start = text.find("{", start + 1)
    raise ParseError("no JSON object in the reply")


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = re.match(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*(\d+))?\s*$", value)
        if match:
            number = float(match.group(1))
            return number * 10 / float(match.group(2)) if match.group(2) else number
    if isinstance(value, dict):  # {"score": 7, "reason": ...}
        for key in ("score", "value", "rating"):
            if key in value:
                return _number(value[key])
    return None


def parse_verdict(reply: str, target_ids: list[str]) -> Verdict:
    data = find_json_object(reply)
    raw_scores = data.get("scores") if isinstance(data.get("scores"), dict) else {
        k: v for k, v in data.items() if k in target_ids}
    scores = {k: _number(v) for k, v in raw_scores.items() if k in target_ids}
    overall = _number(data.get("overall", data.get("score")))
    values = [v for v in list(scores.values()) + [overall] if v is not None]
    if not values:
        raise ParseError("the reply has no scores")
    scale = data.get("scale")
    if isinstance(scale, str) and re.search(r"\b5\b", scale) or scale == 5:
        factor = 2.0
    elif max(values) <= 1.0 and any(0 < v < 1 for v in values):
        factor = 10.0  # a 0-1 scale
    elif max(values) <= 100 and sum(v > 10 for v in values) > len(values) / 2:
        factor = 0.1  # a 0-100 scale (most values above 10; one stray 15 among 9s is an error instead)
    else:
        factor = 1.0
    scores = {k: (v * factor if v is not None else None) for k, v in scores.items()}
    overall = overall * factor if overall is not None else None
    bad = [k for k, v in scores.items() if v is not None and not 0 <= v <= 10]
    if bad or (overall is not None and not 0 <= overall <= 10):
        raise ParseError(f"scores out of range 0-10: {', '.join(bad) or 'overall'}")
    missing = [t for t in target_ids if scores.get(t) is None]
    given = [v for v in scores.values() if v is not None]
    if overall is None:
        overall = sum(given) / len(given)
    rationale = data.get("rationale") or data.get("reason") or data.get("explanation") or ""
    return Verdict(round(overall, 3), {t: scores.get(t) for t in target_ids}, str(rationale)[:500], missing)


def parse_preference(reply: str) -> str:
    """'A', 'B' or 'tie' from a pairwise judge's reply (JSON {"winner": ...} or a bare letter)."""
    try:
        winner = str(find_json_object(reply).get("winner", "")).strip()
    except ParseError:
        match = re.search(r"\b(?i:winner|better)\b[^.\n]{0,40}?\b(A|B|(?i:tie))\b", reply)
        if not match:
            raise ParseError("no winner in the reply")
        winner = match.group(1)
    winner = winner.strip("\"' ").upper()
    if winner in ("A", "B"):
        return winner
    if winner in ("TIE", "EQUAL", "NONE"):
        return "tie"
    raise ParseError(f"winner {winner!r} is not A, B or tie")
