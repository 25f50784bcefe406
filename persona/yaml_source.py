"""Read a YAML file into plain Python data, remembering where every key and value came from.

PyYAML's composer gives each node a start mark; we build the data ourselves from the node tree so that
schema errors can point at `file:line:col`, and so that duplicate keys (silently last-one-wins in
PyYAML) become errors. Used by `persona.spec`:

    doc = read_yaml(Path("identities/brand.yaml"), "identities/brand.yaml")
    doc.data["traits"][2]["weight"]          # -> -1
    doc.where(("traits", 2, "weight"))       # -> (12, 13)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from persona.errors import Problem, SpecError

Path_ = tuple  # a path into the document, e.g. ("traits", 2, "weight")


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

    def problem(self, path: Path_, message: str, hint: str = "", key: bool = False) -> Problem:
        line, col = self.where(path, key=key)
        return Problem(self.file, line, col, format_path(path), message, hint)


def format_path(path: Path_) -> str:
    """("traits", 2, "weight") -> "traits[2].weight"."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def read_text(path: Path, display: str) -> str:
    """The file's text, or a SpecError saying why it cannot be read (missing, a folder, not UTF-8...)."""
    try:
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


def parse_yaml(text: str, display: str) -> YamlDocument:
    """Parse one YAML document; syntax errors and duplicate keys become Problems."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
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
        doc.data = _build(loader, node, (), doc, problems, active=set())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problems.append(Problem(display, mark.line + 1 if mark else 1, mark.column + 1 if mark else 1,
                                "", f"YAML error: {e.problem}", "check the value's syntax"))
    finally:
        loader.dispose()
    if problems:
        raise SpecError(problems)
    return doc


def _build(loader: yaml.SafeLoader, node: yaml.Node, path: Path_, doc: YamlDocument,
           problems: list[Problem], active: set[int]) -> Any:
    doc.values.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if id(node) in active:  # an alias that contains itself
        problems.append(doc.problem(path, "recursive YAML alias", "remove the alias (*name) that refers to itself"))
        return None
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves `<<: *base` merge keys
        active.add(id(node))
        out: dict = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            key_at = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if not isinstance(key, str):
                problems.append(Problem(doc.file, *key_at, format_path(path),
                                        f"key {key!r} is not text",
                                        "quote the key; YAML reads yes/no/on/off and numbers as other types"))
                continue
            if key in out:
                first = doc.keys[path + (key,)][0]
                problems.append(Problem(doc.file, *key_at, format_path(path + (key,)),
                                        f"duplicate key '{key}' (first defined on line {first})",
                                        "keep one of the two entries; YAML would silently use the last"))
                continue
            doc.keys[path + (key,)] = key_at
            out[key] = _build(loader, value_node, path + (key,), doc, problems, active)
        active.discard(id(node))
        return out
    if isinstance(node, yaml.SequenceNode):
        active.add(id(node))
        out_list = [_build(loader, item, path + (i,), doc, problems, active) for i, item in enumerate(node.value)]
        active.discard(id(node))
        return out_list
    return loader.construct_object(node, deep=True)


def read_yaml(path: Path, display: str) -> YamlDocument:
    return parse_yaml(read_text(path, display), display)
