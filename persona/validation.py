"""JSON Schema errors as persona Problems: one line each, at the right file:line:col, with a hint.

    problems = schema_problems(doc, schema)   # doc: a YamlDocument from persona.yaml_source

Every error is collected (not just the first). Unknown keys get "did you mean"; wrong types get a hint
about YAML's surprises (yes/no are booleans, bare numbers are numbers); invalid ids get a valid one.
Used for identity specs (persona.spec) and run configs (persona.config).
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from persona.errors import Problem
from persona.yaml_source import YamlDocument, quote

ID_PATTERN = "^[a-z0-9][a-z0-9_.-]*$"  # ids and names; must match identity.schema.json


MAX_PROBLEMS = 200  # per file; a file with 100,000 unknown keys gets 200 lines and a count of the rest


def schema_problems(doc: YamlDocument, schema: dict) -> list[Problem]:
    from jsonschema import Draft202012Validator

    problems: list[Problem] = []
    for error in Draft202012Validator(schema).iter_errors(doc.data):
        problems += _problems_for(doc, error)
        if len(problems) >= MAX_PROBLEMS:
            return problems[:MAX_PROBLEMS] + [doc.problem((), f"more problems in this file than the {MAX_PROBLEMS} "
                                                              "shown; stopped looking", "fix these first")]
    return problems


_TYPE_NAMES = {"string": "text", "number": "a number", "integer": "a whole number", "boolean": "true or false",
               "array": "a list", "object": "a mapping of keys", "null": "nothing"}


def describe_value(value: Any) -> str:
    kind = {bool: "a boolean", int: "a number", float: "a number", str: "text", list: "a list", dict: "a mapping",
            type(None): "nothing"}.get(type(value), type(value).__name__)
    if isinstance(value, (list, dict)) or value is None:
        return kind
    return f"{kind} ({short(value, 40)})"


def short(value: Any, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters: messages stay one readable line whatever the file holds."""
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit]  # repr of a 1 MB string is 1 MB; cut first
    shown = repr(value)
    return shown if len(shown) <= limit else shown[:limit - 3] + "..."


def _problems_for(doc: YamlDocument, error) -> list[Problem]:
    path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    about = schema.get("description", "")
    validator = error.validator
    if validator == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        out = []
        for key in sorted(k for k in error.instance if k not in allowed)[:MAX_PROBLEMS]:
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed keys here: {', '.join(allowed)}"
            out.append(doc.problem(path + (key,), f"unknown key {quote(key)}", hint, key=True))
        return out
    if validator == "required":
        missing = re.match(r"'(.*)' is a required property", error.message)
        key = missing.group(1) if missing else error.message
        return [doc.problem(path, f"missing required key '{key}'", f"add `{key}: ...` here")]
    if validator == "type":
        expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        want = " or ".join(_TYPE_NAMES.get(t, t) for t in expected)
        hint = f"write {want} here"
        if "string" in expected and (isinstance(error.instance, (bool, int, float)) or error.instance is None):
            hint = "quote the value: YAML reads yes/no/on/off as booleans, bare numbers as numbers, an empty value as nothing"
        return [doc.problem(path, f"expected {want}, got {describe_value(error.instance)}", hint)]
    if validator == "enum":
        choices = [o for o in error.validator_value if o is not None]
        options = ", ".join(repr(o) for o in choices)
        close = difflib.get_close_matches(error.instance, [str(o) for o in choices], n=1) \
            if isinstance(error.instance, str) else []
        return [doc.problem(path, f"{short(error.instance)} is not one of {options}",
                            (f"did you mean '{close[0]}'? " if close else "") + f"use one of {options}")]
    if validator == "pattern" and error.validator_value == ID_PATTERN:
        suggestion = _slug(str(error.instance)[:64])
        return [doc.problem(path, f"{short(error.instance)} is not a valid {'name' if path == ('name',) else 'id'}",
                            "use lowercase letters, digits, '-', '_' or '.'"
                            + (f", e.g. '{suggestion}'" if suggestion else ""))]
    if validator == "pattern":
        return [doc.problem(path, f"{short(error.instance)} does not have the expected form", about or error.message)]
    if validator == "maxLength":
        return [doc.problem(path, f"is longer than {error.validator_value} characters ({len(error.instance):,})",
                            "shorten it")]
    if validator in ("minimum", "maximum"):
        bound = "of at least" if validator == "minimum" else "of at most"
        return [doc.problem(path, error.message, f"use a number {bound} {error.validator_value}")]
    if validator == "minLength":
        return [doc.problem(path, "must not be empty", "write some text, or remove the key")]
    if validator == "minItems":
        return [doc.problem(path, "must not be an empty list", "add items, or remove the key")]
    if validator == "minProperties":
        keys = ", ".join(schema.get("properties", {}))
        return [doc.problem(path, "must not be empty", f"use at least one of: {keys}")]
    if validator == "uniqueItems":
        return [doc.problem(path, "contains the same entry twice", "remove the repeated entry")]
    message = error.message if len(error.message) <= 200 else error.message[:197] + "..."  # it quotes the value
    return [doc.problem(path, message, about)]


_ASCII = str.maketrans({"ı": "i", "İ": "i", "ß": "ss", "ø": "o", "æ": "ae", "ł": "l", "đ": "d", " ": "-"})


def _slug(text: str) -> str:
    """A valid id close to `text`: 'Sıcak Ton' -> 'sicak-ton'."""
    import unicodedata

    ascii_text = unicodedata.normalize("NFKD", text.translate(_ASCII)).encode("ascii", "ignore").decode()
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9_.-]", "-", ascii_text.lower())).strip("-._")
