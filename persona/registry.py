"""Tables of named, lazily imported implementations ("hf" -> "persona.backends.hf:HFBackend"): a module is
imported only when its entry is used, and a wrong name, a missing package or an unknown option is a
PersonaError with a hint.

    construct(BACKENDS, "hf", "backend", {"batch_size": 8}, install="pip install 'persona-tune[train]'")
"""

from __future__ import annotations

import difflib
import importlib

from persona.errors import PersonaError


def check_name(table: dict[str, str], name: str, what: str, hidden: tuple[str, ...] = ()) -> None:
    """PersonaError "unknown WHAT 'name'" with a did-you-mean, unless `name` is in `table`; `hidden` entries
    (e.g. test-only ones) work but are not suggested."""
    if name in table:
        return
    shown = [n for n in table if n not in hidden]
    close = difflib.get_close_matches(name, shown, n=1)
    raise PersonaError(f"unknown {what} '{name}'",
                       hint=(f"did you mean '{close[0]}'? " if close else "") + f"{what}s: " + ", ".join(shown))


def load_class(table: dict[str, str], name: str, what: str, install: str):
    """The class `table[name]` names, imported now; a missing package is a PersonaError whose hint is `install`."""
    module_name, class_name = table[name].split(":")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except ImportError as e:
        raise PersonaError(f"{what} '{name}' needs the package '{e.name}', which is not installed",
                           hint=install) from None


def construct(table: dict[str, str], name: str, what: str, options: dict, install: str,
              hidden: tuple[str, ...] = ()):
    """An instance of `table[name]` with `options` (None values left to its defaults). Packages imported in
    its __init__ count as missing packages too; an option its __init__ does not take is named."""
    check_name(table, name, what, hidden)
    cls = load_class(table, name, what, install)
    options = {k: v for k, v in options.items() if v is not None}
    try:
        return cls(**options)
    except ImportError as e:
        raise PersonaError(f"{what} '{name}' needs the package '{e.name}', which is not installed",
                           hint=install) from None
    except TypeError:
        import inspect

        accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        unknown = [k for k in options if k not in accepted]
        if not unknown:
            raise
        raise PersonaError(f"{what} '{name}' has no option '{unknown[0]}'", hint=f"its options: {', '.join(accepted)}")
