"""Read a YAML file into plain Python data, remembering where every key and value came from.

PyYAML's composer gives each node a start mark; we build the data ourselves from the node tree so that
schema errors can point at `file:line:col`, and so that duplicate keys (silently last-one-wins in
PyYAML) become errors. Used by `persona.spec` and `persona.config`:

    doc = read_yaml(Path("identities/brand.yaml"), "identities/brand.yaml")
    doc.data["traits"][2]["weight"]          # -> -1
    doc.where(("traits", 2, "weight"))       # -> (12, 13)

Specs arrive in pull requests, so a file must not be able to hang or exhaust the machine that checks
it. Each limit below is a one-line Problem at the place it was hit; real specs stay far below them.
"""

from __future__ import annotations

import math
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from persona.errors import Problem, SpecError

Path_ = tuple  # a path into the document, e.g. ("traits", 2, "weight")

MAX_FILE_BYTES = 1_000_000  # a large spec is ~20 kB
MAX_DEPTH = 32  # nested lists and mappings; a spec needs 5
MAX_VALUES = 100_000  # keys and values, after expanding aliases (*name) and merge keys (<<): stops "billion laughs"
MAX_NUMBER_CHARS = 100  # digits in one number (Python refuses to read ints of more than 4300 digits)


@dataclass
class YamlDocument:
    file: str  # as shown to the user
    data: Any
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)  # path -> (line, col) of value
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)  # path -> (line, col) of its key

    def where(self, path: Path_, key: bool = False) -> tuple[int, int]:
        """Line and column of `path` (of its key if `key`), else of its closest ancestor that exists."""
        path = tuple(path)
        if key and path in self.keys:
            return self.keys[path]
        while path:
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return self.values.get((), (1, 1))

    def problem(self, path: Path_, message: str, hint: str = "", key: bool = False,
                severity: str = "error") -> Problem:
        line, col = self.where(path, key=key)
        return Problem(self.file, line, col, format_path(path), message, hint, severity)


def format_path(path: Path_) -> str:
    """("traits", 2, "weight") -> "traits[2].weight"; a key with a line break in it -> ['a\\nb']."""
    out = ""
    for part in path:
        if isinstance(part, int) or not part.isprintable():
            out += f"[{part!r}]"
        else:
            out += f".{part}" if out else part
    return out


def quote(text: str) -> str:
    """'text', or its repr when it holds line breaks or other unprintable characters: a problem stays
    one line, and a key in a hostile file cannot print lines that look like persona's own."""
    return f"'{text}'" if text.isprintable() else repr(text)


def read_text(path: Path, display: str) -> str:
    """The file's text, or a SpecError saying why it cannot be read (missing, a folder, too large, not
    UTF-8...)."""
    try:
        info = path.stat()
        if stat.S_ISREG(info.st_mode) and info.st_size > MAX_FILE_BYTES:
            _raise(Problem(display, 1, 1, "", f"file is too large ({info.st_size:,} bytes; at most {MAX_FILE_BYTES:,})",
                           "a spec needs far less; split it with `extends:`"))
        if not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode):
            _raise(Problem(display, 1, 1, "", "is not a regular file (a device, pipe or socket)", "name a .yaml file"))
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError([Problem(display, 1, 1, "", "file not found", "check the path and its spelling")])
    except IsADirectoryError:
        raise SpecError([Problem(display, 1, 1, "", "is a folder, not a file", "name a .yaml file")])
    except OSError as e:
        reason = e.strerror or str(e)
        raise SpecError([Problem(display, 1, 1, "", f"cannot read file: {reason}", "check the file's permissions")])
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        return _raise(
            Problem(display, line, col, "", f"not valid UTF-8 (byte 0x{raw[e.start]:02x})",
                    "save the file as UTF-8 (most editors: 'Save with encoding')")
        )


def _raise(problem: Problem):
    raise SpecError([problem])


class _LimitExceeded(Exception):
    """A file went past one of the limits above; becomes a Problem at `mark`."""

    def __init__(self, mark, message: str, hint: str, path: Path_ = ()):
        super().__init__(message)
        self.mark, self.message, self.hint, self.path = mark, message, hint, path


_TOO_MANY_VALUES = (f"more than {MAX_VALUES:,} keys and values once aliases (*name) and merge keys (<<) are expanded",
                    "a spec needs far fewer; repeat less through aliases, or split the file with `extends:`")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with a nesting limit (its composer is recursive: 10,000 nested `[` would
    end in RecursionError) and a size limit on merge keys (chained `<<: *a` can grow exponentially)."""

    def __init__(self, text: str):
        self._depth = 0
        self._nodes = 0
        self._flattening: set[int] = set()
        super().__init__(text)

    def compose_node(self, parent, index):
        self._depth += 1
        self._nodes += 1  # stop early: composing a million nodes alone takes the pure-Python parser seconds
        try:
            if self._depth > MAX_DEPTH:
                raise _LimitExceeded(self.peek_event().start_mark, f"nested more than {MAX_DEPTH} levels deep",
                                     "a spec needs only a few levels; check the brackets and indentation")
            if self._nodes > MAX_VALUES:
                raise _LimitExceeded(self.peek_event().start_mark, *_TOO_MANY_VALUES)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def flatten_mapping(self, node):
        if id(node) in self._flattening:
            raise _LimitExceeded(node.start_mark, "a merge key (<<) merges the mapping it is in",
                                 "remove the `<<: *name` that refers back to its own mapping")
        if len(self._flattening) >= MAX_DEPTH:
            raise _LimitExceeded(node.start_mark, f"merge keys (<<) nested more than {MAX_DEPTH} levels deep",
                                 "merge fewer mappings into each other")
        self._flattening.add(id(node))
        try:
            total = len(node.value)
            for key_node, value_node in node.value:  # flatten what is merged first, and count it
                if key_node.tag == "tag:yaml.org,2002:merge":
                    merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                    for sub in merged:
                        if isinstance(sub, yaml.MappingNode):
                            self.flatten_mapping(sub)
                            total += len(sub.value)
                        if total > MAX_VALUES:
                            raise _LimitExceeded(node.start_mark, *_TOO_MANY_VALUES)
            super().flatten_mapping(node)
        finally:
            self._flattening.discard(id(node))


def _reader_problem(e: yaml.reader.ReaderError, text: str, display: str) -> Problem:
    """PyYAML refuses control characters (other than tab and line breaks) anywhere in the file."""
    line = text.count("\n", 0, e.position) + 1
    col = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
    code = e.character
    if code < 0x20:
        return Problem(display, line, col, "", f"control character U+{code:04X} is not allowed in YAML",
                       f"delete it (an editor may show it as ^{chr(0x40 + code)}); to put it in text, write the "
                       f"escape \\x{code:02X} inside double quotes")
    return Problem(display, line, col, "", f"character U+{code:04X} is not allowed in YAML",
                   f"delete it; to put it in text, write the escape \\u{code:04X} inside double quotes")


def parse_yaml(text: str, display: str) -> YamlDocument:
    """Parse one YAML document; syntax errors, duplicate keys and limits become Problems."""
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as e:
        raise SpecError([_reader_problem(e, text, display)])
    try:
        node = loader.get_single_node()
    except _LimitExceeded as e:
        loader.dispose()
        raise SpecError([Problem(display, e.mark.line + 1, e.mark.column + 1, "", e.message, e.hint)])
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(str(s) for s in (e.context, e.problem) if s) or "invalid YAML"
        raise SpecError([Problem(display, line, col, "", f"YAML syntax error: {message}",
                                 "check indentation (spaces, not tabs) and quote text containing ': ' or '#'")])
    except yaml.YAMLError as e:
        raise SpecError([Problem(display, 1, 1, "", f"YAML error: {e}", "check the file is valid YAML")])
    doc = YamlDocument(display, None)
    if node is None:
        return doc
    problems: list[Problem] = []
    try:
        doc.data = _build(loader, node, (), doc, problems, active=set(), count=[0])
    except _LimitExceeded as e:  # shown at the top-level key whose value grew too large or deep
        line, col = doc.where(e.path[:1], key=True) if e.path else (e.mark.line + 1, e.mark.column + 1)
        problems = [Problem(display, line, col, format_path(e.path[:1]), e.message, e.hint)]
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problems.append(Problem(display, mark.line + 1 if mark else 1, mark.column + 1 if mark else 1,
                                "", f"YAML error: {e.problem}", "check the value's syntax"))
    finally:
        loader.dispose()
    if problems:
        raise SpecError(problems)
    return doc


def _build(loader: _Loader, node: yaml.Node, path: Path_, doc: YamlDocument,
           problems: list[Problem], active: set[int], count: list[int]) -> Any:
    doc.values.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    count[0] += 1
    if count[0] > MAX_VALUES:
        raise _LimitExceeded(node.start_mark, *_TOO_MANY_VALUES, path=path)
    if len(path) > MAX_DEPTH:  # aliases can nest deeper than the text does
        raise _LimitExceeded(node.start_mark, f"nested more than {MAX_DEPTH} levels deep once aliases (*name) "
                                              "are expanded", "use fewer aliases inside aliases", path=path)
    if id(node) in active:  # an alias that contains itself
        problems.append(doc.problem(path, "recursive YAML alias", "remove the alias (*name) that refers to itself"))
        return None
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves `<<: *base` merge keys
        active.add(id(node))
        out: dict = {}
        for key_node, value_node in node.value:
            count[0] += 1  # the key
            key_at = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if not isinstance(key_node, yaml.ScalarNode):
                kind = "a list" if isinstance(key_node, yaml.SequenceNode) else "a mapping"
                problems.append(Problem(doc.file, *key_at, format_path(path), f"key is {kind}, not text",
                                        "keys must be plain text such as `name:`"))
                continue
            ok, key = _scalar(loader, key_node, path, doc, problems)
            if not ok:
                continue
            if not isinstance(key, str):
                problems.append(Problem(doc.file, *key_at, format_path(path),
                                        f"key {key!r} is not text",
                                        "quote the key; YAML reads yes/no/on/off and numbers as other types"))
                continue
            if key in out:
                first = doc.keys[path + (key,)][0]
                problems.append(Problem(doc.file, *key_at, format_path(path + (key,)),
                                        f"duplicate key {quote(key)} (first defined on line {first})",
                                        "keep one of the two entries; YAML would silently use the last"))
                continue
            doc.keys[path + (key,)] = key_at
            out[key] = _build(loader, value_node, path + (key,), doc, problems, active, count)
        active.discard(id(node))
        return out
    if isinstance(node, yaml.SequenceNode):
        active.add(id(node))
        out_list = [_build(loader, item, path + (i,), doc, problems, active, count)
                    for i, item in enumerate(node.value)]
        active.discard(id(node))
        return out_list
    return _scalar(loader, node, path, doc, problems)[1]


_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


def _scalar(loader: _Loader, node: yaml.ScalarNode, path: Path_, doc: YamlDocument,
            problems: list[Problem]) -> tuple[bool, Any]:
    """(True, value) for a scalar YAML can read and persona accepts; else (False, None) and a Problem."""
    at = (node.start_mark.line + 1, node.start_mark.column + 1)
    if node.tag in _NUMBER_TAGS and len(node.value) > MAX_NUMBER_CHARS:
        problems.append(Problem(doc.file, *at, format_path(path),
                                f"number is too long ({len(node.value):,} characters; at most {MAX_NUMBER_CHARS})",
                                "write a shorter number, or quote the value if it is text"))
        return False, None
    try:
        value = loader.construct_object(node, deep=True)
    except yaml.MarkedYAMLError:
        raise
    except Exception as e:  # e.g. a timestamp with month 13: datetime's ValueError
        reason = " ".join(str(e).split())  # one line
        problems.append(Problem(doc.file, *at, format_path(path), f"YAML cannot read {node.value[:40]!r}: {reason}",
                                "quote the value if it is text"))
        return False, None
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(Problem(doc.file, *at, format_path(path), f"{node.value[:40]!r} is not a finite number",
                                "write a number such as 1 or 0.5; .nan and .inf are not allowed"))
        return False, None
    return True, value


def read_yaml(path: Path, display: str) -> YamlDocument:
    return parse_yaml(read_text(path, display), display)
