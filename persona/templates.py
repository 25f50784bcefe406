"""Prompt templates: jinja2 files found by name on a search path, rendered in a sandbox.

The search path is the project's `templates/` folder (or `--templates DIR`) first, then the built-ins
shipped with persona, so copying a built-in into `templates/` and editing it overrides it:

    from persona.templates import render_template
    text = render_template("conforming", spec=spec)                      # templates/conforming.j2
    text = render_template("violating", spec=spec, target=spec.target("warm"))

Templates run in jinja2's SandboxedEnvironment (no access to Python internals such as `__class__`)
with StrictUndefined (a misspelt or missing variable is an error, never an empty string). The
variables each built-in expects are listed in `TEMPLATE_VARIABLES` and in docs/guide.md.

Templates may come from a pull request, and their output may be sent to a remote API, so a template
is also limited (each limit is a PersonaError naming the file and, where known, the line):
  * only files inside the template folders are read, symlinks followed: a link to any other file is
    refused rather than rendered into a prompt; at most MAX_TEMPLATE_BYTES each;
  * rendering stops after MAX_RENDER_SECONDS (SIGALRM in the main thread, see persona.checks.time_limit;
    in other threads the sandbox's own hooks check the clock) and after MAX_OUTPUT_CHARS of output;
  * operations that would build a huge value in one step are refused before they run: `**` and `*`
    on numbers past MAX_INT_BITS, text or lists past MAX_OUTPUT_CHARS from `*`, `+`, `~`, `%`,
    str.format, padding and indent widths, and lists grown past it by append/extend.
The environment is built once per set of folders and compiles each template once (jinja2 reloads a
file when it changes), so rendering once per judged response stays cheap.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import stat
import string
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import BaseLoader, StrictUndefined, TemplateError, TemplateNotFound, TemplateSyntaxError, UndefinedError
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError
from jinja2.loaders import split_template_path
from jinja2.sandbox import SandboxedEnvironment, safe_range
from jinja2.utils import Namespace

from persona.checks import TimeLimitExceeded, time_limit
from persona.errors import PersonaError

TEMPLATE_SUFFIX = ".j2"
PROJECT_TEMPLATES = Path("templates")
MAX_TEMPLATE_BYTES = 1_000_000  # the built-ins are ~3 kB
MAX_RENDER_SECONDS = 5.0  # the built-ins render in well under a millisecond
MAX_OUTPUT_CHARS = 1_000_000  # also the longest text or list a template may build
MAX_INT_BITS = 4096  # ~1,200 digits
LIMITS_HINT = (f"templates may run {MAX_RENDER_SECONDS:g} s, write {MAX_OUTPUT_CHARS:,} characters and build numbers "
               f"of up to {MAX_INT_BITS:,} bits; look for loops inside loops and very large numbers")

# What each built-in template renders into, and the variables it needs beyond `spec`.
TEMPLATE_VARIABLES: dict[str, dict[str, str]] = {
    "conforming": {},
    "violating": {"target": "the trait, style rule, constraint or ethics item to break (spec.target(ID))"},
    "probes": {"target": "the trait or constraint the prompts should test", "n": "how many prompts to write",
               "topics": "subjects to draw on (list of text)"},
    "judge": {"prompt": "the user's message", "response": "the response to score"},
    "adversarial": {},
    "judge_pairwise": {"prompt": "the user's message", "response_a": "first response", "response_b": "second response"},
    "rubric": {"conversation": "the test's conversation as text, the user's last message at the end",
               "response": "the answer to judge", "rubric": "what a kept answer does (the test's rubric:)"},
    "identity_answers": {},
    "identity_contexts": {},
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
                       hint="reinstall persona (pip install --force-reinstall persona-tune)")


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
    return _cached_environment(tuple(d.resolve() for d in search_path(templates_dir)))


@functools.lru_cache(maxsize=16)
def _cached_environment(folders: tuple[Path, ...]) -> SandboxedEnvironment:
    env = _LimitedSandbox(
        loader=_FolderLoader(folders),
        undefined=StrictUndefined,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # prompts are plain text, not HTML
        finalize=_finalize,
    )
    env.filters["fence"] = fence
    env.filters["phrase"] = phrase
    env.filters = {name: _limited_filter(name, f) for name, f in env.filters.items()}
    env.globals.pop("lipsum", None)  # lorem ipsum of any length: nothing a prompt needs
    env.globals["range"] = _range
    env.globals["namespace"] = _LimitedNamespace
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
    """The file that `name` resolves to; refused if it is a link to a file outside the template folders."""
    for info in list_templates(templates_dir):
        if info.name == name:
            _check_readable(info.path, [d.resolve() for d in search_path(templates_dir)])
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
    path = template_file(name, templates_dir)
    shown = _shown(path)
    env = _environment(templates_dir)
    try:
        with time_limit(MAX_RENDER_SECONDS) as alarmed:
            if alarmed:
                return _render(env.get_template(path.name), variables, shown).strip() + "\n"
            with _clock_checked_by_hand(MAX_RENDER_SECONDS):
                return _render(env.get_template(path.name), variables, shown).strip() + "\n"
    except TemplateSyntaxError as e:
        raise PersonaError(f"{shown}:{e.lineno}: template syntax error: {e.message}",
                           hint="see https://jinja.palletsprojects.com/en/stable/templates/ for the syntax")
    except TimeLimitExceeded as e:
        raise PersonaError(f"{shown}:{_template_line(e, path)}: rendering took longer than {MAX_RENDER_SECONDS:g} s",
                           hint=LIMITS_HINT)
    except _TemplateLimit as e:
        raise PersonaError(f"{shown}:{_template_line(e, path)}: refused by the sandbox: {e}", hint=LIMITS_HINT)
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
    except PersonaError:
        raise
    except Exception as e:  # ZeroDivisionError, OverflowError, RecursionError...: the template's fault, no traceback
        message = str(e) if len(str(e)) <= 200 else str(e)[:197] + "..."
        raise PersonaError(f"{shown}:{_template_line(e, path)}: template error: {type(e).__name__}: {message}",
                           hint="check the template")


def template_variables(spec, template: str, target: str | None = None) -> dict:
    """The variables a built-in template needs besides the spec, as the pipeline passes them (persona render):
    violating.j2 and probes.j2 a target (`target`, else the spec's first), probes.j2 a count and the topics."""
    variables: dict = {}
    if template in ("violating", "probes"):
        variables["target"] = spec.target(target) if target else spec.targets()[0]
    if template == "probes":
        variables.update(n=5, topics=list(spec.probes.topics))
    return variables


def tagged_lines(name: str, templates_dir: str | Path | None, pattern: re.Pattern, expected: str, hint: str,
                 valid=None, **variables) -> list[re.Match]:
    """Render template `name` and match every non-empty line against `pattern` (the "[tag] text" templates:
    adversarial.j2, identity_answers.j2, identity_contexts.j2). A line that does not match, or whose match
    `valid(match)` refuses, is a PersonaError naming the template file, the rendered line and `expected`."""
    text = render_template(name, templates_dir, **variables)
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = pattern.match(line.strip())
        if not match or (valid is not None and not valid(match)):
            raise PersonaError(f"{template_file(name, templates_dir)}: rendered line {number} is not {expected}: "
                               f"{line.strip()[:60]!r}", hint=hint)
        found.append(match)
    return found


def _render(template, variables: dict, shown: str) -> str:
    """template.render(), but the output is counted while it streams, so it stops at MAX_OUTPUT_CHARS."""
    parts: list[str] = []
    total = 0
    for chunk in template.generate(**variables):
        total += len(chunk)
        if total > MAX_OUTPUT_CHARS:
            raise PersonaError(f"{shown}: output is longer than {MAX_OUTPUT_CHARS:,} characters", hint=LIMITS_HINT)
        parts.append(chunk)
    return "".join(parts)


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


# ---------------------------------------------------------------------------------------------------------
# Reading template files: only inside the template folders


def _check_readable(path: Path, folders: list[Path]) -> None:
    """Refuse a template that is a link out of the template folders, or too large to be one."""
    try:
        real = path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        raise PersonaError(f"{_shown(path)}: cannot follow the link: a symlink loop", hint="point it at a template")
    if not any(real == folder or folder in real.parents for folder in folders):
        raise PersonaError(f"{_shown(path)}: is a link to a file outside the template folders",
                           hint="copy the template into templates/ (or the --templates folder) instead of linking "
                                "to it; persona renders only files inside its template folders")
    if real.stat().st_size > MAX_TEMPLATE_BYTES:
        raise PersonaError(f"{_shown(path)}: template is larger than {MAX_TEMPLATE_BYTES:,} bytes",
                           hint="a template needs far less; check the file")


class _FolderLoader(BaseLoader):
    """jinja2's FileSystemLoader, except that `{% include %}`, `{% import %}` and `{% extends %}` too
    reach only files inside the folders (FileSystemLoader follows a symlink anywhere)."""

    def __init__(self, folders: tuple[Path, ...]):
        self.folders = list(folders)

    def get_source(self, environment, template: str):
        for folder in self.folders:
            path = folder.joinpath(*split_template_path(template))  # refuses ".."
            if not path.is_file():
                continue
            _check_readable(path, self.folders)
            raw = path.read_bytes()
            try:
                source = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise PersonaError(f"{_shown(path)}: not valid UTF-8 (byte 0x{raw[e.start]:02x})",
                                   hint="save the template as UTF-8")
            earlier = [f.joinpath(*split_template_path(template)) for f in self.folders[:self.folders.index(folder)]]
            return source, str(path), functools.partial(_unchanged, path, raw, earlier)
        raise TemplateNotFound(template)


def _unchanged(path: Path, raw: bytes, earlier: list[Path] = ()) -> bool:
    """Whether a compiled template is still current: no folder searched before it has the template now (a
    project copy that overrides a built-in), and its bytes are the same. Bytes, not the modification time:
    two edits within one tick of the file system's clock (a few ms) would otherwise go unseen."""
    if any(e.is_file() for e in earlier):
        return False
    try:
        info = path.stat()
        return stat.S_ISREG(info.st_mode) and info.st_size == len(raw) and path.read_bytes() == raw
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------------------
# The sandbox's limits. Each check runs before the operation, where one step could allocate gigabytes
# (`"x" * 10**9`, `10 ** 10**10`, `"%1000000000d" % 1`), or on the value built, where it can only double.


class _TemplateLimit(SecurityError):
    """A template went past one of the limits above."""


class _LimitedCodeGenerator(CodeGenerator):
    def visit_Concat(self, node, frame):  # `a ~ b`: through environment.concat_limited, not jinja2's str_join
        self.write("environment.concat_limited((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _LimitedSandbox(SandboxedEnvironment):
    code_generator_class = _LimitedCodeGenerator
    intercepted_binops = frozenset(["*", "**", "+", "%"])

    def call_binop(self, context, operator, left, right):
        _tick()
        if operator == "**":
            _check_power(left, right)
        elif operator == "*":
            _check_product(left, right)
        elif operator == "+" and _sized(left) and _sized(right):
            _check_length(len(left) + len(right), "the sum")
        elif operator == "%" and isinstance(left, str):
            _check_printf(left)
            _check_rendered(right)
        return _checked(super().call_binop(context, operator, left, right))

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja2's own signature)
        _tick()
        _check_call(__obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, (list, dict, set)):  # l.append(...), l.extend(l): the list itself grew
            _checked(owner)
        return _checked(result)

    def concat_limited(self, parts) -> str:
        _tick()
        out = []
        total = 0
        for part in parts:
            _check_rendered(part)
            text = str(part)
            total += len(text)
            _check_length(total, "the joined text")
            out.append(text)
        return "".join(out)


class _LimitedNamespace(Namespace):
    """`{% set ns.text = ns.text ~ ns.text %}` in a loop doubles a text each time: checked here."""

    def __setitem__(self, name, value):
        _check_rendered(value)
        super().__setitem__(name, _checked(value))


_clock = threading.local()  # .deadline: set where SIGALRM cannot be used (threads other than the main one)
_clocked = [0]  # how many renders use _clock now; 0 nearly always, and then _tick costs nothing
_clocked_lock = threading.Lock()


@contextmanager
def _clock_checked_by_hand(seconds: float):
    """Where SIGALRM cannot be used, the sandbox's hooks (calls, operators, filters, output, range)
    check the clock instead. A loop that calls nothing over a list that is not a range can escape it."""
    _clock.deadline = time.monotonic() + seconds
    with _clocked_lock:
        _clocked[0] += 1
    try:
        yield
    finally:
        with _clocked_lock:
            _clocked[0] -= 1
        _clock.deadline = None


def _tick() -> None:
    if _clocked[0]:
        deadline = getattr(_clock, "deadline", None)
        if deadline is not None and time.monotonic() > deadline:
            raise TimeLimitExceeded()


def _sized(value: Any) -> bool:
    return isinstance(value, (str, list, tuple))


def _check_length(n: int, what: str) -> None:
    if n > MAX_OUTPUT_CHARS:
        raise _TemplateLimit(f"{what} would be {n:,} characters or items long (at most {MAX_OUTPUT_CHARS:,})")


def _check_bits(bits: int, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise _TemplateLimit(f"{what} would be a number of about {bits:,} bits (at most {MAX_INT_BITS:,})")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked(value: Any) -> Any:
    """`value`, if it is within the limits."""
    if _is_int(value):
        _check_bits(value.bit_length(), "the result")
    elif isinstance(value, (str, list, tuple, dict, set)):
        _check_length(len(value), "the result")
    return value


def _check_power(left: Any, right: Any) -> None:
    if _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
        _check_bits(math.ceil(math.log2(abs(left)) * right), f"{left} ** {right}")


def _check_product(left: Any, right: Any) -> None:
    if _is_int(left) and _is_int(right):
        _check_bits(left.bit_length() + right.bit_length(), "the product")
    for seq, n in ((left, right), (right, left)):
        if _sized(seq) and _is_int(n):
            _check_length(len(seq) * n, "the repeated text or list")


def _rendered_size(value: Any, budget: int = MAX_OUTPUT_CHARS) -> int:
    """About how long str(value) is, without building it; stops counting past `budget`. A list of a
    million references to one long text is small in memory and enormous as text."""
    total, stack, seen = 0, [value], set()
    while stack and total <= budget:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, (list, tuple, set, frozenset, dict)):
            if id(item) in seen:  # a list that contains itself prints as [...]
                continue
            seen.add(id(item))
            total += 2 * len(item) + 2
            stack.extend(item.items() if isinstance(item, dict) else item)
        elif _is_int(item):
            total += item.bit_length() // 3 + 1
    return total


def _check_rendered(value: Any) -> None:
    if not isinstance(value, str):  # a str's length is checked where it is built
        _check_length(_rendered_size(value), "the value as text")


def _finalize(value: Any) -> Any:
    """Runs on every `{{ ... }}` before it is turned into text."""
    _tick()
    _check_rendered(value)
    return value


_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_printf(fmt: str) -> None:
    """`"%1000000000d" % 1` pads to a gigabyte: refuse widths and precisions past the limit, and `*`."""
    for match in _PRINTF.finditer(fmt):
        for number in match.groups():
            if number == "*":
                raise _TemplateLimit("'*' widths in % formatting are not allowed in templates")
            if number is not None:
                _check_length(_number(number), "the formatted value")


def _number(digits: str) -> int:
    return int(digits) if len(digits) <= 18 else 10**18  # a 5,000-digit width is refused all the same


def _check_brace_format(fmt: str) -> None:
    """The same for str.format: `"{:>1000000000}".format(x)`; nested `{:{width}}` is refused."""
    try:
        fields = [spec for _, _, spec, _ in string.Formatter().parse(fmt) if spec]
    except ValueError:
        return  # str.format will say what is wrong
    for spec in fields:
        if "{" in spec:
            raise _TemplateLimit("nested fields such as {:{width}} are not allowed in templates' str.format")
        for number in re.findall(r"\d+", spec):
            _check_length(_number(number), "the formatted value")


def _grown_length(text: str, args: tuple, kwargs: dict, method: str) -> int | None:
    """How long `text.method(*args)` would be, for the str methods that can make it much longer."""
    arg = lambda i, key, default=None: args[i] if len(args) > i else kwargs.get(key, default)  # noqa: E731
    if method in ("center", "ljust", "rjust", "zfill"):
        width = arg(0, "width", 0)
        return width if _is_int(width) else None
    if method == "expandtabs":
        size = arg(0, "tabsize", 8)
        return len(text) + text.count("\t") * size if _is_int(size) else None
    if method == "replace":
        old, new, count = arg(0, "old", ""), arg(1, "new", ""), arg(2, "count", -1)
        if not (isinstance(old, str) and isinstance(new, str)):
            return None
        hits = text.count(old) if old else len(text) + 1
        if _is_int(count) and count >= 0:
            hits = min(hits, count)
        return len(text) + hits * max(len(new) - len(old), 0)
    if method == "join":
        items = arg(0, "iterable", ())
        if isinstance(items, (list, tuple)):
            return _rendered_size(items) + len(text) * len(items)
    return None


def _check_call(obj: Any, args: tuple, kwargs: dict) -> None:
    owner = getattr(obj, "__self__", None)
    if isinstance(owner, str):
        grown = _grown_length(owner, args, kwargs, getattr(obj, "__name__", ""))
        if grown is not None:
            _check_length(grown, f"the result of {obj.__name__}()")
    wrapped = getattr(obj, "__wrapped__", None)  # str.format / format_map, as the sandbox wraps them
    if isinstance(getattr(wrapped, "__self__", None), str) and wrapped.__name__ in ("format", "format_map"):
        _check_brace_format(wrapped.__self__)
        for value in list(args) + list(kwargs.values()):
            _check_rendered(value)


def _limited_filter(name: str, func):
    """A filter that checks its input and arguments first, and its result after."""
    skip = 1 if hasattr(func, "jinja_pass_arg") else 0  # pass_environment / pass_context filters

    @functools.wraps(func)
    def limited(*args, **kwargs):
        _tick()
        if len(args) > skip:
            _check_filter(name, args[skip], args[skip + 1:], kwargs)
        return _checked(func(*args, **kwargs))

    return limited


def _check_filter(name: str, value: Any, args: tuple, kwargs: dict) -> None:
    arg = lambda i, key, default=None: args[i] if len(args) > i else kwargs.get(key, default)  # noqa: E731
    if isinstance(value, (list, tuple, set, dict)):
        _check_rendered(value)  # |join, |string, |tojson... turn it into text
    text = str(value) if isinstance(value, str) else ""
    if name == "center":
        width = arg(0, "width", 80)
        if _is_int(width):
            _check_length(width, "the centred text")
    elif name == "indent":
        width = arg(0, "width", 4)
        size = len(width) if isinstance(width, str) else width if _is_int(width) else 0
        _check_length(len(text) + (text.count("\n") + 1) * size, "the indented text")
    elif name == "wordwrap":
        width, wrap = arg(0, "width", 79), arg(2, "wrapstring", "\n")
        if _is_int(width) and isinstance(wrap, str):
            _check_length(len(text) + (len(text) // max(width, 1) + 1) * len(wrap), "the wrapped text")
    elif name == "replace" and isinstance(value, str):
        grown = _grown_length(value, args, kwargs, "replace")
        if grown is not None:
            _check_length(grown, "the replaced text")
    elif name == "format" and isinstance(value, str):
        _check_printf(value)
        for v in list(args) + list(kwargs.values()):
            _check_rendered(v)
    elif name in ("batch", "slice"):
        count = arg(0, "linecount" if name == "batch" else "slices", 0)
        if _is_int(count):
            _check_length(count, f"|{name}")


def _range(*args):
    """jinja2's range (at most 100,000 items); where the clock is checked by hand, it is checked while
    looping too, so that an empty loop inside a loop still stops."""
    numbers = safe_range(*args)
    if not _clocked[0] or getattr(_clock, "deadline", None) is None:
        return numbers
    return _ticking(numbers)


def _ticking(numbers):
    for i, n in enumerate(numbers):
        if i % 1000 == 0:
            _tick()
        yield n
