"""Identity specs: YAML -> JSON Schema check (every error collected) -> `extends` merge -> frozen dataclasses.

    from persona.spec import load_spec
    spec = load_spec("identities/brand.yaml")      # raises SpecError listing every problem
    spec.identity.name, [t.id for t in spec.traits], spec.targets()

Validation happens here, once; the rest of persona only sees the dataclasses below. Each problem names
file, line:column, the path in the document and a hint (see `persona.errors.Problem`).

How `extends` merges (documented in docs/guide.md, tested in tests/test_spec.py):
  * the files in `extends` are merged in the order listed, later files winning, and the extending file
    wins over all of them; each extended file first merges its own `extends`;
  * `name`, `kind` and `extends` are never inherited;
  * mappings (identity, style, vocabulary, probes, check) merge key by key;
  * lists of items with ids (traits, style.rules, constraints, ethics, tests) merge by id: an item with an id
    already present replaces it in place, new ids are appended;
  * other lists (examples, probes, vocabulary, aliases) are concatenated, base first, without repeats;
  * cycles are errors;
  * `extends` reaches only files inside the folder of the spec being loaded and its subfolders (after
    following symlinks), so a spec from a pull request cannot pull in, or quote, other files on disk.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from persona.checks import (PATTERN_SECONDS, SLOW_PATTERN_HINT, Check, PatternTimeout, TimeLimitExceeded, check_text,
                            time_limit)
from persona.errors import PersonaError, Problem, SpecError
from persona.validation import describe_value, schema_problems
from persona.yaml_source import YamlDocument, format_path, quote, read_yaml

SPEC_SUFFIXES = (".yaml", ".yml")
ID_LISTS = (("traits",), ("style", "rules"), ("constraints",), ("ethics",))  # the targets: ids unique across them
TESTS = ("tests",)  # behaviour tests: merged by id too, ids unique among the tests
ASSERTIONS = ("contains", "not-contains", "any-of", "regex", "not-regex", "starts-with", "ends-with", "max-words",
              "max-sentences", "language")
NOT_INHERITED = ("name", "kind", "extends", "version")
IDENTITY_TARGET = "identity"  # the implicit target every identity has: its name (and maker)
MAX_EXTENDS_DEPTH = 16  # files in one chain of `extends`
MAX_SPEC_FILES = 100  # files one spec may merge in all
EXAMPLE_CHECK_SECONDS = 10.0  # checking every example against every machine check, for one spec


# ---------------------------------------------------------------------------------------------------------
# The validated spec


@dataclass(frozen=True)
class Identity:
    name: str
    description: str
    maker: str | None = None
    aliases: tuple[str, ...] = ()
    language: str | None = None


@dataclass(frozen=True)
class Trait:
    id: str
    description: str
    weight: float = 1.0


@dataclass(frozen=True)
class StyleRule:
    id: str
    description: str
    check: Check | None = None


@dataclass(frozen=True)
class Style:
    tone: str | None = None
    rules: tuple[StyleRule, ...] = ()
    preferred: tuple[str, ...] = ()
    avoided: tuple[str, ...] = ()


@dataclass(frozen=True)
class Constraint:
    id: str
    description: str
    check: Check | None = None


@dataclass(frozen=True)
class EthicsItem:
    id: str
    description: str


@dataclass(frozen=True)
class Example:
    prompt: str
    response: str


@dataclass(frozen=True)
class Reference:
    """A held-out in-domain question with a good answer written by the team (the spec's `references:`): eval
    compares how likely the trained model and the base find the answer - helpfulness kept, with no judge model."""

    prompt: str
    answer: str


@dataclass(frozen=True)
class Probes:
    topics: tuple[str, ...] = ()
    seeds: tuple[str, ...] = ()
    adversarial: tuple[str, ...] = ()


@dataclass(frozen=True)
class Assertion:
    """One machine assertion of a behaviour test: `kind` is one of ASSERTIONS, `value` its phrase, phrases,
    pattern, number or language code."""

    kind: str
    value: object


@dataclass(frozen=True)
class BehaviourTest:
    """A held-out case of the spec's `tests:`: a prompt (or a short conversation) tied to the targets it tests,
    with machine assertions and/or a rubric sentence for a judge model. Never trained on."""

    id: str
    targets: tuple[str, ...]
    messages: tuple[dict, ...]  # the conversation, ending with the user's message
    assertions: tuple[Assertion, ...] = ()
    rubric: str | None = None
    source: str = ""  # where it is written: "identities/brand.yaml:80:5"

    @property
    def prompt(self) -> str:
        return self.messages[-1]["content"]


@dataclass(frozen=True)
class Target:
    """Something a response can keep or break: a trait, style rule, constraint or ethics item."""

    kind: str  # "identity" | "trait" | "style" | "constraint" | "ethics"
    id: str
    description: str


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str  # "identity" | "component"
    identity: Identity | None
    traits: tuple[Trait, ...]
    style: Style
    constraints: tuple[Constraint, ...]
    ethics: tuple[EthicsItem, ...]
    examples: tuple[Example, ...]
    probes: Probes
    path: str  # the file loaded, as shown to the user
    sources: tuple[str, ...]  # every file merged into this spec, bases first
    spec_hash: str  # sha256 of the merged content: changes whenever anything the pipeline sees changes
    tests: tuple[BehaviourTest, ...] = ()  # behaviour tests, held out of every training split
    references: tuple[Reference, ...] = ()  # in-domain questions with good answers, held out of training

    @property
    def is_origin(self) -> bool:
        """An origin identity names its maker: the model must say who it is and who made it."""
        return self.identity is not None and self.identity.maker is not None

    def targets(self) -> tuple[Target, ...]:
        """Everything a response can keep or break, in spec order, starting with the identity itself."""
        identity = ()
        if self.identity is not None:
            me = self.identity
            claim = f"{me.name}, made by {me.maker}" if me.maker else me.name
            identity = (Target("identity", IDENTITY_TARGET,
                               f"Speaks as {claim}: when asked who it is{' or who made it' if me.maker else ''}, "
                               f"says so, and never claims another name{' or maker' if me.maker else ''}."),)
        return (
            identity
            + tuple(Target("trait", t.id, t.description) for t in self.traits)
            + tuple(Target("style", r.id, r.description) for r in self.style.rules)
            + tuple(Target("constraint", c.id, c.description) for c in self.constraints)
            + tuple(Target("ethics", e.id, e.description) for e in self.ethics)
        )

    def checks(self) -> tuple[tuple[str, Check], ...]:
        """(target id, check) for every style rule and constraint with a machine `check:`, in spec order."""
        return tuple((r.id, r.check) for r in (*self.style.rules, *self.constraints) if r.check is not None)

    def target(self, target_id: str) -> Target:
        for t in self.targets():
            if t.id == target_id:
                return t
        ids = [t.id for t in self.targets()]
        close = difflib.get_close_matches(target_id, ids, n=1)
        raise PersonaError(
            f"{self.path}: no trait, style rule, constraint or ethics item has the id '{target_id}'",
            hint=f"did you mean '{close[0]}'?" if close else f"ids in this spec: {', '.join(ids) or 'none'}",
        )


# ---------------------------------------------------------------------------------------------------------
# Public entry points


@cache
def identity_schema() -> dict:
    """The identity spec's JSON Schema (draft 2020-12), as shipped in the package."""
    return json.loads(resources.files("persona").joinpath("identity.schema.json").read_text("utf-8"))


def load_spec(path: str | Path, allow_component: bool = False) -> Spec:
    """Load, validate and merge one spec file. Raises SpecError with every error found (warnings,
    which `persona validate` shows, do not stop it)."""
    spec, problems = _load(Path(path))
    errors = [p for p in problems if p.is_error]
    if errors or spec is None:
        raise SpecError(errors)
    if spec.kind == "component" and not allow_component:
        raise PersonaError(
            f"{spec.path}: is a component (kind: component), not a complete identity",
            hint="generate or render an identity that lists this file under `extends:`",
        )
    return spec


def uncovered_targets_warning(path) -> list[Problem]:
    """A warning (for persona validate) naming the targets of an identity that neither a machine `check:` nor a
    behaviour test with `assert:` covers: only a judge model can score them, else eval shows them not judged."""
    try:
        spec = load_spec(path, allow_component=True)
    except PersonaError:  # check_file has said what is wrong
        return []
    if spec.kind != "identity":
        return []
    machine = {IDENTITY_TARGET} | {t for t, _ in spec.checks()} | {t for test in spec.tests if test.assertions
                                                                 for t in test.targets}
    targets = [t.id for t in spec.targets()]
    missing = [t for t in targets if t not in machine]
    if not missing:
        return []
    return [Problem(display_path(path), 1, 1, "", f"no machine check and no test with `assert:` covers {len(missing)} "
                    f"of {len(targets)} targets: {', '.join(missing)}; only a judge model can score them",
                    "add a `check:` to a style rule or constraint, or a test with `assert:`; else judge them with "
                    "--judge llm (a capable model) - persona eval shows them as not judged otherwise", "warning")]


def check_files(paths) -> tuple[list[Path], list, int]:
    """(spec files found under `paths`, their problems sorted - a base file shared by several specs reports its
    once - and how many files are invalid). Never raises for a file: what goes wrong in one is its problem."""
    files = find_spec_files(paths)
    problems: dict = {}
    invalid = 0
    for file in files:
        found = check_file(file)
        invalid += any(p.is_error for p in found)
        found += [] if any(p.is_error for p in found) else uncovered_targets_warning(file)
        for problem in found:
            problems.setdefault(problem, None)
    return files, sorted(problems), invalid


def check_file(path: str | Path) -> list[Problem]:
    """Every problem (errors and warnings) in one spec file and the files it extends; components are
    accepted. Never raises: whatever goes wrong becomes a Problem for this file, so that one hostile or
    broken file cannot stop `persona validate` from checking the others in a folder."""
    path = Path(path)
    try:
        return sorted(set(_load(path)[1]))
    except PersonaError as e:
        return [Problem(_display_or_str(path), 1, 1, "", e.message, e.hint)]
    except Exception as e:  # a bug in persona, or one of Python's own limits (RecursionError, MemoryError)
        return [Problem(_display_or_str(path), 1, 1, "", f"persona could not check this file: {type(e).__name__}",
                        "this is a bug in persona; please report it with the file")]


def _load(path: Path) -> tuple[Spec | None, list[Problem]]:
    """The spec (None if it has errors) and every problem found in it and the files it extends."""
    display = display_path(path)
    root = _real(path.absolute().parent)
    real = _real(path)
    if real is None or root is None:
        return None, [Problem(display, 1, 1, "", "cannot follow the path: a symlink loop or an invalid name",
                              "point the symlink at a real file")]
    if not _inside(real, root):
        return None, [Problem(display, 1, 1, "", "is a symlink to a file outside its folder",
                              "copy the file into the folder instead of linking to it; persona reads only files "
                              "inside the folder of the spec it loads")]
    loader = _Loader(root, display_path(root))
    merged, doc = loader.load(real, display, stack=())
    problems = loader.problems
    if merged is None or any(p.is_error for p in problems):
        return None, problems
    problems = problems + _check_merged(merged, doc, loader.origins)
    if any(p.is_error for p in problems):
        return None, problems
    return _to_spec(merged, doc.file, tuple(loader.order), loader.origins), problems


def find_spec_files(paths: list[str | Path]) -> list[Path]:
    """The spec files named, and those under the folders named (recursively), sorted; a missing path
    or a folder without specs is an error."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix in SPEC_SUFFIXES and (f.is_file() or f.is_symlink()))
            if not files:
                raise PersonaError(f"{p}: no .yaml or .yml files in this folder",
                                   hint="name spec files or folders that contain them")
            found += files
        elif p.exists() or p.is_symlink():
            found.append(p)
        else:
            raise PersonaError(f"{p}: no such file or folder", hint="check the path")
    return list(dict.fromkeys(found))


def display_path(path: Path) -> str:
    """`path` as the user should see it: relative to the working folder when inside it. Symlinks are
    not followed, so a link is shown under its own name, not its target's."""
    absolute = Path(os.path.abspath(path))
    try:
        shown = str(absolute.relative_to(Path.cwd().resolve()))
    except ValueError:
        shown = str(path)
    # a file name may hold a line break: escape it, so one problem stays one line of output
    return shown if shown.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown)


def _display_or_str(path: Path) -> str:
    try:
        return display_path(path)
    except (OSError, ValueError):
        return str(path)


def _real(path: Path) -> Path | None:
    """`path` with every symlink followed; None for a symlink loop or a name the system refuses."""
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):  # RuntimeError: symlink loop (Python < 3.13)
        return None


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


# ---------------------------------------------------------------------------------------------------------
# Loading and merging


class _Loader:
    """Loads a spec and everything it extends, collecting problems rather than stopping at the first.
    Only files inside `root` (the folder of the spec being loaded, symlinks followed) are read."""

    def __init__(self, root: Path, root_display: str):
        self.root, self.root_display = root, root_display
        self.problems: list[Problem] = []
        self.cache: dict[Path, tuple[dict | None, YamlDocument | None]] = {}
        self.origins: dict[int, tuple[YamlDocument, tuple]] = {}  # id(item dict) -> where it was written
        self.order: list[str] = []  # files merged, bases first

    def load(self, path: Path, display: str, stack: tuple[Path, ...]) -> tuple[dict | None, YamlDocument | None]:
        if path in self.cache:
            return self.cache[path]
        self.cache[path] = (None, None)
        try:
            doc = read_yaml(path, display)
        except SpecError as e:
            self.problems += e.problems
            return None, None
        problems = _check_document(doc)
        self.problems += problems
        if any(p.is_error for p in problems):
            return None, doc
        data: dict = doc.data
        for list_path in ID_LISTS + (TESTS, ("examples",), ("references",)):
            for i, item in enumerate(_get(data, list_path) or []):
                self.origins[id(item)] = (doc, list_path + (i,))

        merged: dict = {}
        for i, target in enumerate(data.get("extends", [])):
            target_path = self._extended(doc, i, target, path, stack)
            if target_path is None:
                continue
            base, _ = self.load(target_path, display_path(target_path), stack + (path,))
            if base is not None:
                merged = _merge(merged, base, ())
        own = {k: v for k, v in data.items() if k != "extends"}
        merged = _merge({k: v for k, v in merged.items() if k not in NOT_INHERITED}, own, ())
        self.order.append(display)
        self.cache[path] = (merged, doc)
        return merged, doc

    def _extended(self, doc: YamlDocument, i: int, target: str, path: Path, stack: tuple[Path, ...]) -> Path | None:
        """The file `extends[i]` names, or None and a Problem. Files outside the root are refused before
        they are looked at, so the message says nothing about them (not even whether they exist)."""
        here = ("extends", i)
        target_path = _real(path.parent / target)
        if target_path is None:
            self.problems.append(doc.problem(here, f"cannot follow {target!r}: a symlink loop or an invalid name",
                                             "name a .yaml file next to this one or in a subfolder"))
            return None
        if not _inside(target_path, self.root):
            self.problems.append(doc.problem(
                here, f"extended file {target!r} is outside {self.root_display}/, the folder of the spec being loaded",
                "`extends` may only name files in that folder or its subfolders (after following symlinks); "
                "copy the file there"))
            return None
        if target_path in stack + (path,):
            chain = " -> ".join(display_path(p) for p in stack + (path, target_path))
            self.problems.append(doc.problem(here, f"extends cycle: {chain}",
                                             "remove one of the `extends` entries that form the cycle"))
            return None
        if len(stack) + 1 >= MAX_EXTENDS_DEPTH or len(self.cache) >= MAX_SPEC_FILES:
            self.problems.append(doc.problem(
                here, f"too many extended files (at most {MAX_SPEC_FILES} in all, {MAX_EXTENDS_DEPTH} in a chain)",
                "merge some of the components into one file"))
            return None
        try:
            found = target_path.is_file()
        except OSError:
            found = False
        if not found:
            self.problems.append(doc.problem(
                here, f"extended file {quote(target)} not found (looked for {display_path(target_path)})",
                "paths in `extends` are relative to the file that contains them"))
            return None
        return target_path


def _get(data: dict, path: tuple) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _merge(base: dict, child: dict, path: tuple) -> dict:
    out = dict(base)
    for key, value in child.items():
        here = path + (key,)
        if key not in out:
            out[key] = value
        elif here in ID_LISTS or here == TESTS:
            by_id = {item["id"]: item for item in out[key]}
            order = list(by_id)
            for item in value:
                if item["id"] not in by_id:
                    order.append(item["id"])
                by_id[item["id"]] = item
            out[key] = [by_id[i] for i in order]
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _merge(out[key], value, here)
        elif isinstance(value, list) and isinstance(out[key], list):
            present = {_canonical(v) for v in out[key]}  # not `v in list`: quadratic on long lists
            out[key] = out[key] + [v for v in value if _canonical(v) not in present]
        else:
            out[key] = value
    return out


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------------------
# Checks: the schema, then the rules the schema cannot express (all of them here, in one place)


def _check_document(doc: YamlDocument) -> list[Problem]:
    """Problems in one file on its own: not a mapping, schema errors, duplicate ids, broken regexes."""
    if doc.data is None:
        return [Problem(doc.file, 1, 1, "", "file is empty (no keys, only blank lines or comments)",
                        "start from `persona init NAME`, or see `persona schema` for the format")]
    if not isinstance(doc.data, dict):
        return [Problem(doc.file, *doc.where(()), "",
                        f"the top level must be a mapping of keys, got {describe_value(doc.data)}",
                        "start the file with keys such as `name:` and `identity:`")]
    # every problem of the file in one pass: the rules below also run where the schema found errors, on the
    # parts that have the right shape (a list of mappings, a string id, a list of string patterns)
    problems = schema_problems(doc, identity_schema())

    def items(path: tuple) -> list[tuple[int, dict]]:
        found = _get(doc.data, path)
        return [(i, item) for i, item in enumerate(found) if isinstance(item, dict)] if isinstance(found, list) else []

    def strings(mapping, key: str) -> list[tuple[int, str]]:
        found = mapping.get(key) if isinstance(mapping, dict) else None
        return [(j, v) for j, v in enumerate(found) if isinstance(v, str)] if isinstance(found, list) else []

    seen: dict[str, tuple] = {}
    for list_path in ID_LISTS:
        for i, item in items(list_path):
            here = list_path + (i,)
            if not isinstance(item.get("id"), str):
                continue
            if item["id"] == IDENTITY_TARGET:
                problems.append(doc.problem(here + ("id",), f"the id '{IDENTITY_TARGET}' is reserved",
                                            "persona scores the identity itself under that id; choose another"))
            elif item["id"] in seen:
                first = seen[item["id"]]
                problems.append(doc.problem(here + ("id",), f"duplicate id '{item['id']}' (also {format_path(first)}, "
                                            f"line {doc.where(first)[0]})",
                                            "ids must be unique across traits, style rules, constraints and ethics"))
            else:
                seen[item["id"]] = here + ("id",)
    checked = [(("constraints", i), c) for i, c in items(("constraints",))]
    checked += [(("style", "rules", i), r) for i, r in items(("style", "rules"))]
    for at, constraint in checked:
        check = constraint.get("check", {})
        for key in ("forbidden_patterns", "required_patterns"):
            for j, pattern in strings(check, key):
                try:
                    with time_limit(PATTERN_SECONDS):  # re.compile is Python code: a huge pattern takes a while
                        re.compile(pattern)
                except re.error as e:
                    problems.append(doc.problem(at + ("check", key, j),
                                                f"invalid regular expression {pattern!r}: {e}",
                                                "patterns are Python regexes; escape ( ) [ ] . * + ? with \\ to match them literally"))
                except (TimeLimitExceeded, RecursionError, OverflowError):
                    problems.append(doc.problem(
                        at + ("check", key, j),
                        f"regular expression too large or too complex ({len(pattern):,} characters)",
                        "write a shorter pattern"))
        for key in ("forbidden_phrases", "required_phrases", "forbidden_patterns", "required_patterns"):
            for j, text in strings(check, key):
                problems += _control_characters(doc, at + ("check", key, j), text)
    problems += _check_tests(doc, items(TESTS))
    style = doc.data.get("style")
    vocabulary = style.get("vocabulary", {}) if isinstance(style, dict) else {}
    for key in ("preferred", "avoided"):
        for j, text in strings(vocabulary, key):
            problems += _control_characters(doc, ("style", "vocabulary", key, j), text)
    return problems


def _check_tests(doc: YamlDocument, tests: list[tuple[int, dict]]) -> list[Problem]:
    """One file's behaviour tests on their own: unique ids, a prompt or a conversation ending with the user's
    message, something to check, regexes that compile."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, test in tests:
        here = TESTS + (i,)
        if isinstance(test.get("id"), str):
            if test["id"] in seen:
                problems.append(doc.problem(here + ("id",), f"duplicate test id '{test['id']}' (also tests[{seen[test['id']]}])",
                                            "test ids must be unique among the tests"))
            seen.setdefault(test["id"], i)
        asked = [k for k in ("prompt", "conversation") if k in test]
        if len(asked) != 1:
            problems.append(doc.problem(here, "a test needs a prompt or a conversation" if not asked else
                                        "a test has a prompt or a conversation, not both",
                                        "e.g. prompt: Which stock should I buy?"))
        turns = test.get("conversation")
        if isinstance(turns, list) and turns and isinstance(turns[-1], dict) and turns[-1].get("role") != "user":
            problems.append(doc.problem(here + ("conversation", len(turns) - 1), "the last turn must be the user's",
                                        "the model answers the user's last message"))
        if "assert" not in test and "rubric" not in test:
            problems.append(doc.problem(here, "a test needs assert: or rubric: (what a kept answer does)",
                                        "e.g. assert: [{not-contains: guaranteed}]"))
        for j, assertion in enumerate(test.get("assert") or []):
            if not isinstance(assertion, dict):
                continue
            for kind in ("regex", "not-regex"):
                pattern = assertion.get(kind)
                if not isinstance(pattern, str):
                    continue
                try:
                    with time_limit(PATTERN_SECONDS):
                        re.compile(pattern)
                except re.error as e:
                    problems.append(doc.problem(here + ("assert", j, kind), f"invalid regular expression {pattern!r}: {e}",
                                                "patterns are Python regexes; escape ( ) [ ] . * + ? with \\ to match "
                                                "them literally"))
                except (TimeLimitExceeded, RecursionError, OverflowError):
                    problems.append(doc.problem(here + ("assert", j, kind), "regular expression too large or too complex",
                                                "write a shorter pattern"))
    return problems


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # control characters but tab and line breaks
_ESCAPES = {0x00: ("NUL", "\\0"), 0x07: ("bell", "\\a"), 0x08: ("backspace", "\\b"), 0x0B: ("vertical tab", "\\v"),
            0x0C: ("form feed", "\\f"), 0x1B: ("escape", "\\e")}


def _control_characters(doc: YamlDocument, path: tuple, text: str) -> list[Problem]:
    """A warning for a phrase or pattern with a control character in it: almost always a YAML escape
    taken by surprise. In double quotes "\\bI will refund\\b" is a backspace, then "I will refund", then
    a backspace: it validates, and never matches."""
    found = _CONTROL.search(text)
    if not found:
        return []
    code = ord(found.group())
    name, escape = _ESCAPES.get(code, ("control", f"\\x{code:02X}"))
    fixed = _CONTROL.sub(lambda m: _ESCAPES.get(ord(m.group()), ("", f"\\x{ord(m.group()):02X}"))[1], text)
    shown = repr(text) if len(text) <= 60 else repr(text[:57]) + "..."
    single = "'" + fixed.replace("'", "''") + "'" if len(fixed) <= 60 else "'...'"
    return [doc.problem(path, f"{shown} contains a {name} character (U+{code:04X}), which responses do not contain",
                        f"in double quotes YAML turns {escape} into a {name}; use single quotes, {single}, "
                        f"or write \\{escape} in double quotes", severity="warning")]


def _check_merged(merged: dict, doc: YamlDocument, origins: dict) -> list[Problem]:
    """Rules on the spec after `extends` is merged: completeness, ids unique across files, examples
    that break the spec's own machine checks."""

    def where(item: dict, fallback: tuple) -> tuple[YamlDocument, tuple]:
        return origins.get(id(item), (doc, fallback))

    problems: list[Problem] = []
    if merged.get("kind", "identity") == "identity":
        identity = merged.get("identity", {})
        for key in ("name", "description"):
            if key not in identity:
                problems.append(doc.problem(("identity", key), "is required (in this file or one it extends)",
                                            f"add `identity: {{{key}: ...}}`, or `kind: component` if this file is a part"))
        if not merged.get("traits") and not merged.get("constraints"):
            problems.append(doc.problem((), "an identity needs at least one trait or constraint",
                                        "add `traits:` or `constraints:`; violating responses are aimed at them"))

    seen: dict[str, tuple[YamlDocument, tuple]] = {}
    for list_path in ID_LISTS:
        for i, item in enumerate(_get(merged, list_path) or []):
            item_doc, item_path = where(item, list_path + (i,))
            if item["id"] in seen:
                first_doc, first_path = seen[item["id"]]
                problems.append(item_doc.problem(
                    item_path + ("id",),
                    f"id '{item['id']}' is also used by {format_path(first_path)} in {first_doc.file}",
                    "ids must be unique across traits, style rules, constraints and ethics; rename one"))
            else:
                seen[item["id"]] = (item_doc, item_path)

    problems += _check_merged_tests(merged, where)
    checked = [(c, *where(c, ("constraints", i))) for i, c in enumerate(merged.get("constraints", [])) if "check" in c]
    checked += [(r, *where(r, ("style", "rules", i))) for i, r in enumerate((merged.get("style") or {}).get("rules", []))
                if "check" in r]
    checks = [_to_check(c["check"]) for c, _, _ in checked]
    slow: set[int] = set()  # constraints whose patterns ran out of time: reported once, then skipped
    deadline = time.monotonic() + EXAMPLE_CHECK_SECONDS
    shown = [("examples", i, e, "response") for i, e in enumerate(merged.get("examples", []))]
    shown += [("references", i, r, "answer") for i, r in enumerate(merged.get("references") or [])
              if isinstance(r, dict) and isinstance(r.get("answer"), str)]
    for section, i, example, field in shown:
        ex_doc, ex_path = where(example, (section, i))
        for k, ((constraint, c_doc, c_path), check) in enumerate(zip(checked, checks)):
            if k in slow:
                continue
            if time.monotonic() > deadline:
                problems.append(doc.problem(
                    (), f"checking the examples took more than {EXAMPLE_CHECK_SECONDS:g} s in all; stopped",
                    "use fewer or simpler patterns, or shorter examples"))
                return problems
            try:
                broken = check_text(check, example[field])
            except PatternTimeout as e:
                slow.add(k)
                on = format_path(ex_path + (field,)) + (f" in {ex_doc.file}" if ex_doc is not c_doc else "")
                problems.append(c_doc.problem(c_path + ("check", f"{e.kind}_patterns", e.index),
                                              f"the pattern {e.pattern!r} took more than {PATTERN_SECONDS:g} s on {on}",
                                              SLOW_PATTERN_HINT))
                continue
            for b in broken:
                what = "example" if section == "examples" else "reference answer"
                problems.append(ex_doc.problem(
                    ex_path + (field,),
                    f"the {what} breaks {'style rule' if c_path[0] == 'style' else 'constraint'} "
                    f"'{constraint['id']}': it {b}",
                    ("examples are demonstrations of the ideal answer" if section == "examples" else
                     "references are the good answers eval measures help by") + f"; fix the {what} or the check"))
    return problems


def normalize(text: str) -> str:
    """'  Who ARE you?! ' -> 'who are you': what deduplication (and holding tests out of training) compares."""
    import unicodedata

    return re.sub(r"[\W_]+", " ", unicodedata.normalize("NFKC", text).casefold()).strip()


def _check_merged_tests(merged: dict, where) -> list[Problem]:
    """The merged spec's tests: each names targets the spec has (an identity; a component's tests are checked
    where it is extended), and none asks a prompt that is also a probe seed, an adversarial probe or an example
    (tests are never trained on)."""
    problems: list[Problem] = []
    identity = merged.get("kind", "identity") == "identity"
    targets = [item["id"] for path in ID_LISTS for item in _get(merged, path) or []]
    targets += [IDENTITY_TARGET] if merged.get("identity") else []
    probes = merged.get("probes") or {}
    trained = {normalize(t): where_ for where_, texts in (("probes.seeds", probes.get("seeds") or []),
                                                         ("probes.adversarial", probes.get("adversarial") or []))
               for t in texts if isinstance(t, str)}
    trained.update({normalize(e["prompt"]): "examples" for e in merged.get("examples") or [] if isinstance(e, dict)
                    and isinstance(e.get("prompt"), str)})
    for i, reference in enumerate(merged.get("references") or []):
        text = reference.get("prompt") if isinstance(reference, dict) else None
        if isinstance(text, str) and normalize(text) in trained:
            r_doc, r_path = where(reference, ("references", i))
            problems.append(r_doc.problem(r_path + ("prompt",), f"this reference's prompt is also in "
                                          f"{trained[normalize(text)]}: references are held out of training",
                                          "write the question another way, or drop it from the probes and examples"))
    for i, test in enumerate(merged.get("tests") or []):
        t_doc, t_path = where(test, TESTS + (i,))
        for j, target in enumerate(test.get("targets") or []):
            if identity and target not in targets:
                close = difflib.get_close_matches(target, targets, n=1)
                problems.append(t_doc.problem(t_path + ("targets", j), f"unknown target '{target}'",
                                              (f"did you mean '{close[0]}'? " if close else "")
                                              + "targets: " + ", ".join(targets)))
        turns = test.get("conversation") or [{"role": "user", "content": test.get("prompt", "")}]
        for k, turn in enumerate(turns):
            text = turn.get("content") if isinstance(turn, dict) and turn.get("role") == "user" else None
            if isinstance(text, str) and normalize(text) in trained:
                at = t_path + (("prompt",) if "prompt" in test else ("conversation", k, "content"))
                problems.append(t_doc.problem(at, f"this test's prompt is also in {trained[normalize(text)]}: "
                                              "tests are never trained on", "write the test's prompt another way, or "
                                              "drop it from the probes and examples"))
    return problems


# ---------------------------------------------------------------------------------------------------------
# Dataclasses from the validated, merged mapping


def _to_check(data: dict, source: str = "") -> Check:
    return Check(
        forbidden_phrases=tuple(data.get("forbidden_phrases", ())),
        required_phrases=tuple(data.get("required_phrases", ())),
        forbidden_patterns=tuple(data.get("forbidden_patterns", ())),
        required_patterns=tuple(data.get("required_patterns", ())),
        max_words=data.get("max_words"),
        max_chars=data.get("max_chars"),
        max_sentences=data.get("max_sentences"),
        ends_with_question=data.get("ends_with_question", False),
        numbered_steps=data.get("numbered_steps", False),
        max_grade_level=data.get("max_grade_level"),
        case_sensitive=data.get("case_sensitive", False),
        source=source,
    )


def _to_spec(data: dict, path: str, sources: tuple[str, ...], origins: dict) -> Spec:
    def check_source(constraint: dict) -> str:  # "identities/brand.yaml:14:7": named when a pattern is too slow
        if id(constraint) not in origins:
            return path
        doc, where = origins[id(constraint)]
        line, col = doc.where(where + ("check",), key=True)
        return f"{doc.file}:{line}:{col}"

    def item_source(item: dict) -> str:  # "identities/brand.yaml:80:5": where a test is written
        if id(item) not in origins:
            return path
        doc, where = origins[id(item)]
        line, col = doc.where(where)
        return f"{doc.file}:{line}:{col}"

    ident = data.get("identity")
    style = data.get("style", {})
    vocabulary = style.get("vocabulary", {})
    probes = data.get("probes", {})
    canonical = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return Spec(
        name=data["name"],
        kind=data.get("kind", "identity"),
        identity=Identity(
            name=ident["name"], description=ident["description"], maker=ident.get("maker"),
            aliases=tuple(ident.get("aliases", ())), language=ident.get("language"),
        ) if ident and "name" in ident and "description" in ident else None,
        traits=tuple(Trait(t["id"], t["description"], float(t.get("weight", 1.0))) for t in data.get("traits", [])),
        style=Style(
            tone=style.get("tone"),
            rules=tuple(StyleRule(r["id"], r["description"], _to_check(r["check"], check_source(r)) if "check" in r
                                  else None) for r in style.get("rules", [])),
            preferred=tuple(vocabulary.get("preferred", ())),
            avoided=tuple(vocabulary.get("avoided", ())),
        ),
        constraints=tuple(
            Constraint(c["id"], c["description"], _to_check(c["check"], check_source(c)) if "check" in c else None)
            for c in data.get("constraints", [])
        ),
        ethics=tuple(EthicsItem(e["id"], e["description"]) for e in data.get("ethics", [])),
        examples=tuple(Example(e["prompt"], e["response"]) for e in data.get("examples", [])),
        probes=Probes(
            topics=tuple(probes.get("topics", ())),
            seeds=tuple(probes.get("seeds", ())),
            adversarial=tuple(probes.get("adversarial", ())),
        ),
        path=path,
        sources=sources,
        spec_hash=hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        tests=tuple(_to_test(t, item_source(t)) for t in data.get("tests", [])),
        references=tuple(Reference(r["prompt"], r["answer"]) for r in data.get("references", [])),
    )


def _to_test(data: dict, source: str) -> BehaviourTest:
    turns = data.get("conversation") or [{"role": "user", "content": data["prompt"]}]
    assertions = []
    for item in data.get("assert", []):
        (kind, value), = item.items()
        assertions.append(Assertion(kind, tuple(value) if isinstance(value, list) else value))
    return BehaviourTest(data["id"], tuple(data["targets"]), tuple({"role": t["role"], "content": t["content"]}
                                                                  for t in turns),
                         tuple(assertions), data.get("rubric"), source)
