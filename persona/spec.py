"""Identity specs: YAML -> JSON Schema check (every error collected) -> `extends` merge -> frozen dataclasses.

    from persona.spec import load_spec
    spec = load_spec("identities/brand.yaml")      # raises SpecError listing every problem
    spec.identity.name, [t.id for t in spec.traits], spec.targets()

Validation happens here, once; the rest of persona only sees the dataclasses below. Each problem names
file, line:column, the path in the document and a hint (see `persona.errors.Problem`).

How `extends` merges (documented in the README, tested in tests/test_spec.py):
  * the files in `extends` are merged in the order listed, later files winning, and the extending file
    wins over all of them; each extended file first merges its own `extends`;
  * `name`, `kind` and `extends` are never inherited;
  * mappings (identity, style, vocabulary, probes, check) merge key by key;
  * lists of items with ids (traits, style.rules, constraints, ethics) merge by id: an item with an id
    already present replaces it in place, new ids are appended;
  * other lists (examples, probes, vocabulary, aliases) are concatenated, base first, without repeats;
  * cycles are errors.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from persona.checks import Check, check_text
from persona.errors import PersonaError, Problem, SpecError
from persona.validation import ID_PATTERN, describe_value, schema_problems
from persona.yaml_source import YamlDocument, format_path, read_yaml

SPEC_SUFFIXES = (".yaml", ".yml")
ID_LISTS = (("traits",), ("style", "rules"), ("constraints",), ("ethics",))
NOT_INHERITED = ("name", "kind", "extends", "version")
IDENTITY_TARGET = "identity"  # the implicit target every identity has: its name (and maker)


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
class Probes:
    topics: tuple[str, ...] = ()
    seeds: tuple[str, ...] = ()
    adversarial: tuple[str, ...] = ()


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
    """Load, validate and merge one spec file. Raises SpecError with every problem found."""
    path = Path(path)
    loader = _Loader()
    merged, doc = loader.load(path.resolve(), display_path(path), stack=())
    if loader.problems or merged is None:
        raise SpecError(loader.problems)
    problems = _check_merged(merged, doc, loader.origins)
    if problems:
        raise SpecError(problems)
    if merged.get("kind", "identity") == "component" and not allow_component:
        raise PersonaError(
            f"{doc.file}: is a component (kind: component), not a complete identity",
            hint="generate or render an identity that lists this file under `extends:`",
        )
    return _to_spec(merged, doc.file, tuple(loader.order))


def check_file(path: str | Path) -> list[Problem]:
    """Every problem in one spec file and the files it extends (components are accepted)."""
    try:
        load_spec(path, allow_component=True)
    except SpecError as e:
        return e.problems
    return []


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
    """`path` as the user should see it: relative to the working folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------------------
# Loading and merging


class _Loader:
    """Loads a spec and everything it extends, collecting problems rather than stopping at the first."""

    def __init__(self):
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
        if problems:
            return None, doc
        data: dict = doc.data
        for list_path in ID_LISTS + (("examples",),):
            for i, item in enumerate(_get(data, list_path) or []):
                self.origins[id(item)] = (doc, list_path + (i,))

        merged: dict = {}
        for i, target in enumerate(data.get("extends", [])):
            target_path = (path.parent / target).resolve()
            if target_path in stack + (path,):
                chain = " -> ".join(display_path(p) for p in stack + (path, target_path))
                self.problems.append(doc.problem(("extends", i), f"extends cycle: {chain}",
                                                 "remove one of the `extends` entries that form the cycle"))
                continue
            if not target_path.is_file():
                self.problems.append(doc.problem(
                    ("extends", i), f"extended file '{target}' not found (looked for {display_path(target_path)})",
                    "paths in `extends` are relative to the file that contains them"))
                continue
            base, _ = self.load(target_path, display_path(target_path), stack + (path,))
            if base is not None:
                merged = _merge(merged, base, ())
        own = {k: v for k, v in data.items() if k != "extends"}
        merged = _merge({k: v for k, v in merged.items() if k not in NOT_INHERITED}, own, ())
        self.order.append(display)
        self.cache[path] = (merged, doc)
        return merged, doc


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
        elif here in ID_LISTS:
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
            out[key] = out[key] + [v for v in value if v not in out[key]]
        else:
            out[key] = value
    return out


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
    problems = schema_problems(doc, identity_schema())
    if problems:
        return problems

    seen: dict[str, tuple] = {}
    for list_path in ID_LISTS:
        for i, item in enumerate(_get(doc.data, list_path) or []):
            here = list_path + (i,)
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
    for i, constraint in enumerate(doc.data.get("constraints", [])):
        check = constraint.get("check", {})
        for key in ("forbidden_patterns", "required_patterns"):
            for j, pattern in enumerate(check.get(key, [])):
                try:
                    re.compile(pattern)
                except re.error as e:
                    problems.append(doc.problem(("constraints", i, "check", key, j),
                                                f"invalid regular expression {pattern!r}: {e}",
                                                "patterns are Python regexes; escape ( ) [ ] . * + ? with \\ to match them literally"))
    return problems


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

    checks = [(c["id"], _to_check(c["check"])) for c in merged.get("constraints", []) if "check" in c]
    for i, example in enumerate(merged.get("examples", [])):
        ex_doc, ex_path = where(example, ("examples", i))
        for constraint_id, check in checks:
            for broken in check_text(check, example["response"]):
                problems.append(ex_doc.problem(
                    ex_path + ("response",),
                    f"the example breaks constraint '{constraint_id}': it {broken}",
                    "examples are demonstrations of the ideal answer; fix the example or the check"))
    return problems


# ---------------------------------------------------------------------------------------------------------
# Dataclasses from the validated, merged mapping


def _to_check(data: dict) -> Check:
    return Check(
        forbidden_phrases=tuple(data.get("forbidden_phrases", ())),
        required_phrases=tuple(data.get("required_phrases", ())),
        forbidden_patterns=tuple(data.get("forbidden_patterns", ())),
        required_patterns=tuple(data.get("required_patterns", ())),
        max_words=data.get("max_words"),
        max_chars=data.get("max_chars"),
        case_sensitive=data.get("case_sensitive", False),
    )


def _to_spec(data: dict, path: str, sources: tuple[str, ...]) -> Spec:
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
            rules=tuple(StyleRule(r["id"], r["description"]) for r in style.get("rules", [])),
            preferred=tuple(vocabulary.get("preferred", ())),
            avoided=tuple(vocabulary.get("avoided", ())),
        ),
        constraints=tuple(
            Constraint(c["id"], c["description"], _to_check(c["check"]) if "check" in c else None)
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
    )
