"""Prompt templates: jinja2 files found by name on a search path, rendered in a sandbox.

The search path is the project's `templates/` folder (or `--templates DIR`) first, then the built-ins
shipped with persona, so copying a built-in into `templates/` and editing it overrides it:

    from persona.templates import render_template
    text = render_template("conforming", spec=spec)                      # templates/conforming.j2
    text = render_template("violating", spec=spec, target=spec.target("warm"))

Templates run in jinja2's SandboxedEnvironment (no access to Python internals such as `__class__`)
with StrictUndefined (a misspelt or missing variable is an error, never an empty string). The
variables each built-in expects are listed in `TEMPLATE_VARIABLES` and in the README.
"""

from __future__ import annotations

import hashlib
import traceback
from dataclasses import dataclass
from pathlib import Path

from persona.errors import PersonaError

TEMPLATE_SUFFIX = ".j2"
PROJECT_TEMPLATES = Path("templates")

# What each built-in template renders into, and the variables it needs beyond `spec`.
TEMPLATE_VARIABLES: dict[str, dict[str, str]] = {
    "conforming": {},
    "violating": {"target": "the trait, style rule, constraint or ethics item to break (spec.target(ID))"},
    "probes": {"target": "the trait or constraint the prompts should test", "n": "how many prompts to write",
               "topics": "subjects to draw on (list of text)"},
    "judge": {"prompt": "the user's message", "response": "the response to score"},
    "adversarial": {},
    "judge_pairwise": {"prompt": "the user's message", "response_a": "first response", "response_b": "second response"},
    "identity_answers": {},
    "deployment": {},
}


def builtin_dir(name: str) -> Path:
    """A folder shipped with persona ("templates" or "identities"): inside the installed wheel, or the
    top level of a source checkout (editable installs)."""
    from importlib import resources

    packaged = Path(str(resources.files("persona"))) / "_builtin" / name
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parent.parent / name
    if checkout.is_dir():
        return checkout
    raise PersonaError(f"persona's built-in {name}/ folder is missing from the installation",
                       hint="reinstall persona (pip install --force-reinstall persona)")


def search_path(templates_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for templates, first match wins."""
    first = Path(templates_dir) if templates_dir is not None else PROJECT_TEMPLATES
    if templates_dir is not None and not first.is_dir():
        raise PersonaError(f"templates folder '{first}' not found", hint="create it or omit --templates")
    builtin = builtin_dir("templates")
    dirs = [first] if first.is_dir() else []
    return dirs + ([builtin] if not dirs or first.resolve() != builtin.resolve() else [])


@dataclass(frozen=True)
class TemplateInfo:
    name: str
    path: Path
    source: str  # "project" | "built-in"
    overrides_builtin: bool


def list_templates(templates_dir: str | Path | None = None) -> list[TemplateInfo]:
    """Every template name found, with the file that wins and where it comes from."""
    builtin = builtin_dir("templates").resolve()
    found: dict[str, TemplateInfo] = {}
    builtin_names = {p.stem for p in builtin.glob(f"*{TEMPLATE_SUFFIX}")}
    for folder in search_path(templates_dir):
        is_builtin = folder.resolve() == builtin
        for file in sorted(folder.glob(f"*{TEMPLATE_SUFFIX}")):
            if file.stem not in found:
                found[file.stem] = TemplateInfo(file.stem, file, "built-in" if is_builtin else "project",
                                                not is_builtin and file.stem in builtin_names)
    return sorted(found.values(), key=lambda t: t.name)


def _environment(templates_dir: str | Path | None):
    from jinja2 import FileSystemLoader, StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(
        loader=FileSystemLoader([str(d) for d in search_path(templates_dir)]),
        undefined=StrictUndefined,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # prompts are plain text, not HTML
    )
    env.filters["fence"] = fence
    env.filters["phrase"] = phrase
    return env


def phrase(text: str) -> str:
    """A description as the rest of a sentence: 'A general-purpose assistant.' -> 'a general-purpose
    assistant.' (only a leading article is lowercased, so names keep their capitals)."""
    text = str(text).strip()
    first, _, rest = text.partition(" ")
    if first in ("A", "An", "The") and rest:
        return first.lower() + " " + rest
    return text


def fence(text: str, label: str = "DATA") -> str:
    """Wrap untrusted text (a response to judge) between markers it cannot contain: the marker carries a
    hash of the text itself, so a response cannot close the fence early and smuggle in instructions.

        {{ response | fence("RESPONSE") }}  ->  <<<RESPONSE 3f9a1c2e>>>\n...\n<<<END RESPONSE 3f9a1c2e>>>
    """
    tag = hashlib.sha256(str(text).encode("utf-8")).hexdigest()[:8]
    return f"<<<{label} {tag}>>>\n{text}\n<<<END {label} {tag}>>>"


def template_file(name: str, templates_dir: str | Path | None = None) -> Path:
    """The file that `name` resolves to."""
    for info in list_templates(templates_dir):
        if info.name == name:
            return info.path
    import difflib

    names = [t.name for t in list_templates(templates_dir)]
    close = difflib.get_close_matches(name, names, n=1)
    raise PersonaError(f"template '{name}' not found",
                       hint=(f"did you mean '{close[0]}'? " if close else "")
                       + f"templates found: {', '.join(names)} (see `persona ls`)")


def template_hash(name: str, templates_dir: str | Path | None = None) -> str:
    """sha256 of the template's source; recorded with every generated record."""
    return hashlib.sha256(template_file(name, templates_dir).read_bytes()).hexdigest()[:16]


def render_template(name: str, templates_dir: str | Path | None = None, **variables) -> str:
    """Render template `name` with `variables`; every failure is a PersonaError naming file and line."""
    from jinja2 import TemplateError, TemplateSyntaxError, UndefinedError
    from jinja2.exceptions import SecurityError

    path = template_file(name, templates_dir)
    shown = _shown(path)
    env = _environment(templates_dir)
    try:
        template = env.get_template(path.name)
        return template.render(**variables).strip() + "\n"
    except TemplateSyntaxError as e:
        raise PersonaError(f"{shown}:{e.lineno}: template syntax error: {e.message}",
                           hint="see https://jinja.palletsprojects.com/en/stable/templates/ for the syntax")
    except SecurityError as e:
        raise PersonaError(f"{shown}:{_template_line(e, path)}: refused by the sandbox: {e}",
                           hint="templates may only use the variables they are given, not Python internals")
    except UndefinedError as e:
        line = _template_line(e, path)
        if "unsafe" in str(e):
            raise PersonaError(f"{shown}:{line}: refused by the sandbox: {e}",
                               hint="templates may only use the variables they are given, not Python internals")
        given = ", ".join(sorted(variables)) or "none"
        raise PersonaError(f"{shown}:{line}: {e}",
                           hint=f"variables given to '{name}': {given}; check the spelling, "
                                "or pass a missing one (persona render: --var NAME=VALUE)")
    except TemplateError as e:
        raise PersonaError(f"{shown}:{_template_line(e, path)}: template error: {e}", hint="check the template")


def _template_line(error: BaseException, path: Path) -> int | str:
    """jinja2 rewrites tracebacks so that frames of template code carry the template's file and line."""
    line: int | str = "?"
    for frame in traceback.extract_tb(error.__traceback__):
        if Path(frame.filename).resolve() == path.resolve():
            line = frame.lineno
    return line


def _shown(path: Path) -> str:
    from persona.spec import display_path

    return display_path(path)
