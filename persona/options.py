"""Settings dataclasses as the one source of their command-line options: each field's default, type, help
text and flags live on the field (`setting(...)`), and `add_options` turns the fields into typer options,
with "[default: ...]" taken from the field, so no option, default or help text is written twice.

    @dataclass
    class RunConfig:
        k: int = setting(2, "Conforming and violating responses per prompt.", "-k", min=1)

    @add_options(RunConfig, skip=("backend_options",))
    def generate(spec: ..., settings: dict): ...      # settings: {field: value given, else None}
"""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import MISSING, field, fields
from typing import Annotated, Any, Optional


def setting(default: Any = MISSING, help: str = "", *flags: str, min: float | None = None,
            max: float | None = None, shown: str | None = None, choices: tuple | None = None, factory=MISSING,
            cli: bool = True, key: str | None = None, file: bool = True, example: str = "", word: str = "NAME",
            flag: str | None = None):
    """A dataclass field with its command-line option: `help` (without its default: "[default: X]" is added
    from `default`, or from `shown` where the default needs words, e.g. "runs/<identity name>"), extra
    `flags` (e.g. "-b"), bounds and `choices` (also the config files' JSON Schema: `schema_of`), and
    `cli=False` for a field that has no option of its own. `key`: its name in files and on the command line
    where the field's own cannot be (from: / --from for the field `start`); `file=False`: a command-line option
    only, never a key of a config or job file. A dict field's option is repeatable WORD=VALUE (--set
    beta=0.5), each value read as JSON where it parses (`example` is the hint for a malformed one); `flag`: its
    long option where that differs from the key (--backend-option for backend_options)."""
    metadata = {"help": help, "flags": flags, "min": min, "max": max, "shown": shown, "cli": cli,
                "choices": choices, "key": key, "file": file, "example": example, "word": word, "flag": flag}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def key_of(f) -> str:
    """A field's name in files and on the command line."""
    return f.metadata.get("key") or f.name


def parse_value(value: str):
    """'12' -> 12, '0.5' -> 0.5, 'true' -> True, '[sigmoid, sft]' stays text unless it is JSON, anything else text."""
    import json

    try:
        return json.loads(value)
    except ValueError:
        return value


def assignments(items: list[str] | None, flag: str, example: str, parse=None, word: str = "NAME") -> dict:
    """Repeatable WORD=VALUE options -> {word: parsed value}; a malformed one is a PersonaError that never echoes
    what may be a pasted key or a URL with a password."""
    from persona.errors import PersonaError

    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            from persona.secrets import KEY_SHAPED, url_without_credentials

            shown = KEY_SHAPED.sub("***", url_without_credentials(item) if "://" in item else item)[:80]
            raise PersonaError(f"{flag} {shown!r} is not {word}=VALUE", hint=example)
        out[name] = (parse or parse_value)(value)
    return out


def given(cls, values: dict):
    """`cls` with the options given on the command line (None: not given, so the field's default)."""
    return cls(**{k: v for k, v in values.items() if v is not None})


def help_text(f, shown: str | None = None) -> str:
    meta = f.metadata
    shown = shown if shown is not None else meta.get("shown")
    if shown is None and f.default is not MISSING and f.default is not None:
        shown = str(f.default).lower() if isinstance(f.default, bool) else str(f.default)
        shown = {"true": "on", "false": "off"}.get(shown, shown)
    return meta.get("help", "") + (f" [default: {shown}]" if shown else "")


JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean", dict: "object", list: "array",
              tuple: "array"}


def schema_of(cls, skip: tuple[str, ...] = ()) -> dict:
    """The JSON Schema of `cls`'s fields as a config or job file writes them (each under its `key_of` name; fields
    with file=False are not keys): types, bounds and choices from each field, None allowed where its type is."""
    hints = typing.get_type_hints(cls)
    properties = {}
    for f in fields(cls):
        if f.name in skip or not f.metadata.get("file", True):
            continue
        hint = hints[f.name]
        kind = JSON_TYPES.get(_value_type(hint), "string")
        nullable = type(None) in typing.get_args(hint)
        prop: dict = {"type": [kind, "null"] if nullable else kind}
        meta = f.metadata
        if meta.get("min") is not None:
            prop["minimum"] = meta["min"]
        if meta.get("max") is not None:
            prop["maximum"] = meta["max"]
        if meta.get("choices"):
            prop = {"enum": [*meta["choices"], *([None] if nullable else [])]}
        properties[key_of(f)] = prop
    return {"type": "object", "additionalProperties": False, "properties": properties}


def settings_table(cls) -> str:
    """A Markdown table of `cls`'s settings: file key, command-line option, what it does (with its default)."""
    rows = ["| key | option | what it does |", "|---|---|---|"]
    for f in fields(cls):
        meta = f.metadata
        if "help" not in meta:
            continue
        key = f"`{key_of(f)}`" if meta.get("file", True) else ""
        option = ", ".join(f"`{flag}`" for flag in flags_of(f)) if meta.get("cli") else ""
        rows.append(f"| {key} | {option} | {help_text(f).replace('|', '/')} |")
    return "\n".join(rows)


def flags_of(f) -> tuple[str, ...]:
    """`--key-name` (or the field's own `flag`) and its extra flags (e.g. "-k")."""
    return (f.metadata.get("flag") or f"--{key_of(f).replace('_', '-')}", *f.metadata["flags"])


def _value_type(hint):
    """str for `str | None`, int for `int`, ..."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def option_parameters(cls, skip: tuple[str, ...] = (), shown: dict | None = None) -> list[inspect.Parameter]:
    """One keyword parameter per field of `cls` that has an option: typer reads it as `--field-name` (a dict field:
    a repeatable option of strings). `shown`: another "[default: ...]" text for some fields (the same setting
    whose absence means something else in one command)."""
    import typer

    hints = typing.get_type_hints(cls)
    params = []
    for f in fields(cls):
        meta = f.metadata
        if f.name in skip or not meta.get("cli", True) or "help" not in meta:
            continue
        kind = _value_type(hints[f.name])
        flags = flags_of(f)
        if kind is bool:  # a switch: --name/--no-name
            flags = (f"{flags[0]}/--no-{flags[0][2:]}", *flags[1:])
        annotation_kind = list[str] if kind is dict else kind
        option = typer.Option(*flags, help=help_text(f, (shown or {}).get(f.name)), min=meta.get("min"),
                              max=meta.get("max"), show_default=False)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[Optional[annotation_kind], option]))
    return params


def add_options(cls, skip: tuple[str, ...] = (), into: str = "settings", shown: dict | None = None):
    """Give a command one option per field of `cls`; the command receives them as `into` (a dict of every
    such field: the value given on the command line, else None - None leaves the config file's value or
    the field's default; a dict field's WORD=VALUE items parsed into a dict)."""
    def wrap(function):
        extra = option_parameters(cls, skip, shown)
        names = [p.name for p in extra]
        by_name = {f.name: f for f in fields(cls)}
        signature = inspect.signature(function, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != into]

        @functools.wraps(function)
        def run(*args, **kwargs):
            given = {name: kwargs.pop(name, None) for name in names}
            for name, value in given.items():
                meta = by_name[name].metadata
                if isinstance(value, list):  # a dict field's repeatable option
                    given[name] = assignments(value, flags_of(by_name[name])[0], meta.get("example", ""),
                                              word=meta.get("word", "NAME")) if value else None
            return function(*args, **{into: given}, **kwargs)

        run.__signature__ = signature.replace(parameters=own + extra)
        del run.__wrapped__  # typer must read the signature above, not the wrapped function's
        # and its annotations as objects (typer's get_type_hints would evaluate strings in this module)
        run.__annotations__ = {p.name: p.annotation for p in run.__signature__.parameters.values()}
        return run

    return wrap
