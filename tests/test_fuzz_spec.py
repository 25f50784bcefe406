"""Property-based fuzzing of the spec loader (and of template rendering): whatever the input - random
bytes, random text, YAML-shaped token soup, or spec-shaped documents with hostile values - loading ends
in a Spec, a SpecError or a PersonaError within a time bound. Never another exception, never a hang.

`check_file` is what `persona validate` runs per file; it must not raise at all.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis.configuration import set_hypothesis_home_dir  # noqa: E402

# hypothesis caches Unicode tables and constants in ./.hypothesis; tests write only under the temp folder
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "persona-tests-hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from persona.errors import PersonaError, Problem  # noqa: E402
from persona.spec import Spec, check_file, load_spec  # noqa: E402

FUZZ = settings(max_examples=120, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
BOUND = 15.0  # seconds for one input; the loader's own limits (10 s for examples' checks) sit below it

_counter = itertools.count()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def load(folder: Path, content: bytes) -> None:
    """Write `content` as a spec, then load and check it: only the documented outcomes are allowed."""
    path = folder / f"spec{next(_counter)}.yaml"
    path.write_bytes(content)
    start = time.monotonic()
    try:
        assert isinstance(load_spec(path, allow_component=True), Spec)
    except PersonaError:  # SpecError is one
        pass
    problems = check_file(path)
    assert all(isinstance(p, Problem) for p in problems)
    assert all("\n" not in p.format() for p in problems), [p.format() for p in problems]  # one line each
    assert time.monotonic() - start < BOUND


# --- raw input ----------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=2000))
def test_any_bytes(folder, content):
    load(folder, content)


@FUZZ
@given(st.text(max_size=2000))
def test_any_text(folder, text):
    load(folder, text.encode("utf-8", "surrogatepass"))


# --- YAML-shaped token soup: anchors, aliases, merge keys, tags, flow and block nesting, odd scalars -----

TOKENS = ["\n", "  ", "- ", ": ", "? ", "[", "]", "{", "}", ", ", "&a ", "&b ", "*a", "*b", "<<: ", "!!int ",
          "!!float ", "!!binary ", "!!timestamp ", "!!set ", "!!omap ", "!!python/object ", "'", '"', "\\", "#",
          "|", ">", "---", "...", ".nan", ".inf", "-.inf", "0x", "0o", "1_000", "1:20:30", "2001-13-45", "9" * 50,
          "~", "null", "yes", "no", "\t", "\x07", "\ufeff", "\u2028", "name", "kind", "extends", "identity",
          "traits", "constraints", "check", "forbidden_patterns", "examples", "x", "é", "你"]


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=120))
def test_yaml_token_soup(folder, tokens):
    load(folder, "".join(tokens).encode("utf-8", "surrogatepass"))


# --- spec-shaped documents with hostile values ---------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40), st.sampled_from(["(a+)+$", "(", "[z-a]", "\\b", "\b", "../x.yaml", "/etc/passwd",
                                           "x" * 100, "a" * 30 + "b", "\x00", "..", "."]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                      max_leaves=20)
checks = st.fixed_dictionaries({}, optional={
    "forbidden_phrases": st.lists(st.text(max_size=10), max_size=3),
    "forbidden_patterns": st.lists(st.sampled_from(["(a+)+$", "a|b", "(", "\b", ".*", "x{2,}"]), max_size=3),
    "required_patterns": st.lists(st.sampled_from(["^(a|aa)+$", "\\w+", ")"]), max_size=2),
    "max_words": st.one_of(st.integers(), st.floats()), "case_sensitive": values,
})
specs = st.fixed_dictionaries({"name": st.one_of(st.just("fuzz"), values)}, optional={
    "kind": st.sampled_from(["identity", "component", "other"]),
    "extends": st.lists(st.sampled_from(["base.yaml", "../x.yaml", "/etc/passwd", "missing.yaml", "self.yaml",
                                         "a\x00b.yaml", "loop.yaml"]), max_size=3),
    "identity": st.fixed_dictionaries({}, optional={"name": values, "description": values, "maker": values}),
    "traits": st.lists(st.fixed_dictionaries({"id": st.sampled_from(["a", "b", "identity", "A B"]),
                                              "description": values}, optional={"weight": values}), max_size=3),
    "constraints": st.lists(st.fixed_dictionaries({"id": st.sampled_from(["c", "d"]), "description": values},
                                                  optional={"check": checks}), max_size=3),
    "examples": st.lists(st.fixed_dictionaries({"prompt": st.text(max_size=20),
                                                "response": st.sampled_from(["a" * 30 + "b", "x", "aaaa", "?"])}),
                         max_size=3),
    "extra": values,
})


@FUZZ
@given(specs, st.dictionaries(st.text(max_size=8), values, max_size=3))
def test_spec_shaped_documents(folder, spec, more_keys):
    spec = {**more_keys, **spec}
    (folder / "base.yaml").write_text("name: base\nkind: component\ntraits: [{id: b, description: B.}]\n")
    (folder / "self.yaml").write_text("name: self\nkind: component\nextends: [self.yaml]\n")
    if not (folder / "loop.yaml").is_symlink():
        (folder / "loop.yaml").symlink_to(folder / "loop.yaml")
    load(folder, yaml.safe_dump(spec, allow_unicode=True).encode("utf-8", "surrogatepass"))


# --- templates: arbitrary template text renders or fails with a PersonaError --------------------------

TEMPLATE_TOKENS = ["{{ ", " }}", "{% ", " %}", "for i in ", "range(", "100000", ")", "endfor", "if ", "endif",
                   "set ", "x", " = ", "namespace(s='ab')", "x.s", "**", " * ", " + ", " ~ ", " % ", "'%s'",
                   "'{:>9}'.format(1)", " | ", "join", "center(", "indent(", "string", "spec", ".identity",
                   ".name", ".__class__", "[", "]", "0", "9", "1/0", "macro m()", "endmacro", "m()", "include 't'",
                   "\n", "text ", "'"]


@FUZZ
@given(st.lists(st.sampled_from(TEMPLATE_TOKENS), max_size=40))
def test_template_text(folder, monkeypatch_module, tokens):
    from persona.templates import render_template

    templates = folder / f"templates{next(_counter)}"
    templates.mkdir()
    (templates / "t.j2").write_text("".join(tokens), encoding="utf-8")
    start = time.monotonic()
    try:
        assert isinstance(render_template("t", templates, spec=SPEC), str)
    except PersonaError:
        pass
    assert time.monotonic() - start < BOUND


SPEC = load_spec(Path(__file__).resolve().parent.parent / "identities" / "aster.yaml")


@pytest.fixture(scope="module")
def monkeypatch_module():
    """Renders get 0.5 s here instead of 5 s, so that loops inside loops keep the fuzzing quick."""
    import persona.templates

    saved = persona.templates.MAX_RENDER_SECONDS
    persona.templates.MAX_RENDER_SECONDS = 0.5
    yield
    persona.templates.MAX_RENDER_SECONDS = saved
