"""Errors the library raises. Only `persona.cli` prints them and picks exit codes.

Every error carries a one-line message and a hint saying what to do about it:

    raise PersonaError("template 'judge' not found", hint="run `persona ls` to see the templates")

Problems in user files (specs, templates, datasets) are `Problem`s: file, line, column, path in the
document, message, hint, severity. They format as one line each, like a compiler diagnostic; a warning
(something that is allowed but almost certainly a mistake) says so and does not make a file invalid:

    identities/brand.yaml:12:5: traits[2].weight: -1 is less than the minimum of 0 (hint: ...)
    identities/brand.yaml:20:9: constraints[0].check.forbidden_patterns[0]: warning: contains ... (hint: ...)
"""

from __future__ import annotations

from dataclasses import dataclass


class PersonaError(Exception):
    """An error the user can fix; `message` says what is wrong, `hint` what to do."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


@dataclass(frozen=True, order=True)
class Problem:
    """One problem at one place in one file. `line` and `col` are 1-based."""

    file: str
    line: int
    col: int
    path: str  # e.g. "traits[2].weight"; "" for the whole document
    message: str
    hint: str = ""
    severity: str = "error"  # "error" | "warning"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def _what(self, label: bool = True) -> str:
        message = self.message if self.is_error or not label else f"{self.severity}: {self.message}"
        return f"{self.path}: {message}" if self.path else message

    def format(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}: "
        return where + self._what() + (f" (hint: {self.hint})" if self.hint else "")

    def format_github(self) -> str:
        """A GitHub Actions workflow command: shows up as an annotation on the file and line."""

        def escape_data(s: str) -> str:
            return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

        def escape_property(s: str) -> str:
            return escape_data(s).replace(":", "%3A").replace(",", "%2C")

        what = self._what(label=False) + (f" (hint: {self.hint})" if self.hint else "")
        return (
            f"::{self.severity} file={escape_property(self.file)},line={self.line},col={self.col},"
            f"title={escape_property('persona validate')}::{escape_data(what)}"
        )


class SpecError(PersonaError):
    """A spec (and the files it extends) has one or more problems; all of them are collected."""

    def __init__(self, problems: list[Problem], then: str = "run `persona validate` again"):
        self.problems = sorted(set(problems))
        n = len(self.problems)
        super().__init__(
            "\n".join(p.format() for p in self.problems),
            hint=f"{n} problem{'s' if n != 1 else ''} found; fix them and {then}",
        )
