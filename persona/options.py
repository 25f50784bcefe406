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
            cli: bool = True):
    """A dataclass field with its command-line option: `help` (without its default: "[default: X]" is added
    from `default`, or from `shown` where the default needs words, e.g. "runs/<identity name>"), extra
    `flags` (e.g. "-b"), bounds and `choices` (also the config files' JSON Schema: `schema_of`), and
    `cli=False` for a field that has no option of its own."""
    metadata = {"help": help, "flags": flags, "min": min, "max": max, "shown": shown, "cli": cli,
                "choices": choices}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def help_text(f) -> str:
    meta = f.metadata
    shown = meta.get("shown")
    if shown is None and f.default is not MISSING and f.default is not None:
        shown = str(f.default).lower() if isinstance(f.default, bool) else str(f.default)
        shown = {"true": "on", "false": "off"}.get(shown, shown)
    return meta.get("help", "") + (f" [default: {shown}]" if shown else "")


JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean", dict: "object", list: "array",
              tuple: "array"}


def schema_of(cls, skip: tuple[str, ...] = ()) -> dict:
    """The JSON Schema of `cls`'s fields as a config or job file writes them: types, bounds and choices from
    each field, None allowed where the field's type allows it."""
    hints = typing.get_type_hints(cls)
    properties = {}
    for f in fields(cls):
        if f.name in skip:
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
        properties[f.name] = prop
    return {"type": "object", "additionalProperties": False, "properties": properties}


def settings_table(cls) -> str:
    """A Markdown table of `cls`'s settings: key, command-line option, default, what it does."""
    rows = ["| key | option | what it does |", "|---|---|---|"]
    for f in fields(cls):
        meta = f.metadata
        if "help" not in meta:
            continue
        dashed = f.name.replace("_", "-")
        option = ", ".join(f"`{flag}`" for flag in (f"--{dashed}", *meta["flags"])) if meta.get("cli") else ""
        rows.append(f"| `{f.name}` | {option} | {help_text(f).replace('|', '/')} |")
    return "\n".join(rows)


def _value_type(hint):
    """str for `str | None`, int for `int`, ..."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def option_parameters(cls, skip: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """One keyword parameter per field of `cls` that has an option: typer reads it as `--field-name`."""
    import typer

    hints = typing.get_type_hints(cls)
    params = []
    for f in fields(cls):
        meta = f.metadata
        if f.name in skip or not meta.get("cli", True) or "help" not in meta:
            continue
        kind = _value_type(hints[f.name])
        dashed = f.name.replace("_", "-")
        flags = (f"--{dashed}/--no-{dashed}",) if kind is bool else (f"--{dashed}", *meta["flags"])
        if kind is bool:
            flags = (*flags, *meta["flags"])
        option = typer.Option(*flags, help=help_text(f), min=meta.get("min"), max=meta.get("max"),
                              show_default=False)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[Optional[kind], option]))
    return params


def add_options(cls, skip: tuple[str, ...] = (), into: str = "settings"):
    """Give a command one option per field of `cls`; the command receives them as `into` (a dict of every
    such field: the value given on the command line, else None - None leaves the config file's value or
    the field's default)."""
    def wrap(function):
        extra = option_parameters(cls, skip)
        names = [p.name for p in extra]
        signature = inspect.signature(function, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != into]

        @functools.wraps(function)
        def run(*args, **kwargs):
            given = {name: kwargs.pop(name, None) for name in names}
            return function(*args, **{into: given}, **kwargs)

        run.__signature__ = signature.replace(parameters=own + extra)
        del run.__wrapped__  # typer must read the signature above, not the wrapped function's
        # and its annotations as objects (typer's get_type_hints would evaluate strings in this module)
        run.__annotations__ = {p.name: p.annotation for p in run.__signature__.parameters.values()}
        return run

    return wrap



