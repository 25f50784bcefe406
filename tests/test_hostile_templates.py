"""Hostile templates (issue 12): the sandbox already keeps templates away from Python internals; these
tests hold the other limits - time, output size, numbers and texts built in one step, and files outside
the template folders. Every case is a PersonaError naming the file (and line where there is one).

Cases that used to hang or exhaust memory run in a subprocess with a timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO
from persona.errors import PersonaError
from persona.spec import load_spec
from persona.templates import render_template, template_hash

HANG = 20  # seconds
HINT = ("templates may run 5 s, write 1,000,000 characters and build numbers of up to 4,096 bits; look for loops "
        "inside loops and very large numbers")


def run_python(code: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=HANG)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def render_error(tmp_path: Path, template: str, seconds: float | None = None) -> str:
    """Render `template` in a subprocess (with the time limit set to `seconds`); the error it raises."""
    (tmp_path / "t.j2").write_text(template, encoding="utf-8")
    result = run_python(f"""
        import persona.templates
        from persona.errors import PersonaError
        from persona.spec import load_spec
        if {seconds!r} is not None:
            persona.templates.MAX_RENDER_SECONDS = {seconds!r}
        try:
            persona.templates.render_template("t", {str(tmp_path)!r}, spec=load_spec("identities/aster.yaml"))
        except PersonaError as e:
            print(e.message)
            print(e.hint)
    """)
    message, hint = result.stdout.splitlines()
    return message.replace(str(tmp_path) + "/", "")


# --- time and output ---------------------------------------------------------------------------------


def test_nested_loop_without_output_stops_at_the_time_limit(tmp_path):
    loop = "line one\n{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}\n"
    assert render_error(tmp_path, loop, seconds=0.5) == "t.j2:2: rendering took longer than 0.5 s"


def test_cli_render_of_a_nested_loop_stops_after_5_s(tmp_path):
    (tmp_path / "loop.j2").write_text("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                                      "{% endfor %}\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "persona", "render", "identities/aster.yaml", "--templates",
                             str(tmp_path), "-t", "loop"], capture_output=True, text=True, cwd=REPO, timeout=HANG,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 1
    assert result.stderr == f"error: {tmp_path}/loop.j2:1: rendering took longer than 5 s\nhint: {HINT}\n"


def test_time_limit_outside_the_main_thread(tmp_path):
    # SIGALRM reaches only the main thread; elsewhere the sandbox's own hooks check the clock
    (tmp_path / "t.j2").write_text("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                                   "{% endfor %}\n", encoding="utf-8")
    result = run_python(f"""
        import threading
        import persona.templates
        from persona.errors import PersonaError
        from persona.spec import load_spec
        persona.templates.MAX_RENDER_SECONDS = 0.5
        spec = load_spec("identities/aster.yaml")
        def work():
            try:
                persona.templates.render_template("t", {str(tmp_path)!r}, spec=spec)
            except PersonaError as e:
                print(e.message.rsplit("/", 1)[-1])
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    """)
    assert result.stdout == "t.j2:1: rendering took longer than 0.5 s\n"


def test_nested_loop_with_output_stops_at_the_output_limit(tmp_path):
    loop = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}\n"
    assert render_error(tmp_path, loop) == "t.j2: output is longer than 1,000,000 characters"


# --- one step that would build a huge value ----------------------------------------------------------


@pytest.mark.parametrize("template, message", [
    ("{{ 10 ** (10 ** 10) }}", "10 ** 10000000000 would be a number of about 33,219,280,949 bits (at most 4,096)"),
    ("{% set n = 2 ** 3000 %}{{ n * n }}", "the product would be a number of about 6,002 bits (at most 4,096)"),
    ("{{ 2 ** 5000 }}", "2 ** 5000 would be a number of about 5,000 bits (at most 4,096)"),
    ("{{ 'x' * 1000000000 }}", "the repeated text or list would be 1,000,000,000 characters or items long "
                               "(at most 1,000,000)"),
    ("{{ [0] * 1000000000 }}", "the repeated text or list would be 1,000,000,000 characters or items long "
                               "(at most 1,000,000)"),
    ("{{ '%1000000000d' % 1 }}", "the formatted value would be 1,000,000,000 characters or items long "
                                 "(at most 1,000,000)"),
    ("{{ '%*d' % (1000000000, 1) }}", "'*' widths in % formatting are not allowed in templates"),
    ("{{ '%1000000000d' | format(1) }}", "the formatted value would be 1,000,000,000 characters or items long "
                                         "(at most 1,000,000)"),
    ("{{ '{:>1000000000}'.format(1) }}", "the formatted value would be 1,000,000,000 characters or items long "
                                         "(at most 1,000,000)"),
    ("{{ '{:{w}}'.format(1, w=1000000000) }}", "nested fields such as {:{width}} are not allowed in templates' "
                                               "str.format"),
    ("{{ 'x' | center(1000000000) }}", "the centred text would be 1,000,000,000 characters or items long "
                                       "(at most 1,000,000)"),
    ("{{ 'x'.ljust(1000000000) }}", "the result of ljust() would be 1,000,000,000 characters or items long "
                                    "(at most 1,000,000)"),
    ("{{ ('a' * 100000) | replace('', 'b' * 100000) }}", "the replaced text would be 10,000,200,000 characters "
                                                         "or items long (at most 1,000,000)"),
    ("{{ ('\\n' * 100000) | indent(100000) }}", "the indented text would be 10,000,200,000 characters or items long "
                                               "(at most 1,000,000)"),
    ("{{ [1, 2] | batch(1000000000, 0) | list }}", "|batch would be 1,000,000,000 characters or items long "
                                                   "(at most 1,000,000)"),
])
def test_operations_that_would_build_a_huge_value_are_refused(tmp_path, template, message):
    assert render_error(tmp_path, template + "\n") == f"t.j2:1: refused by the sandbox: {message}"


@pytest.mark.parametrize("template", [
    # doubling in a loop: each step is small, the tenth is a gigabyte
    "{% set ns = namespace(s='x' * 1000) %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% set ns = namespace(s='x' * 1000) %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "{% set l = ['x'] %}{% for i in range(40) %}{{ l.extend(l) or '' }}{% endfor %}",
    # a million references to one long text: small in memory, a terabyte as text
    "{% set l = ['x' * 1000000] * 1000000 %}{{ l }}",
    "{% set l = ['x' * 1000000] * 1000000 %}{{ l | join }}",
    "{% set l = ['x' * 1000000] * 1000000 %}{{ l ~ '' }}",
    "{% set l = ['x' * 1000000] * 1000000 %}{{ ''.join(l) }}",
    "{% set l = ['x' * 1000000] * 1000000 %}{{ '%s' % (l,) }}",
    "{% set l = ['x' * 1000000] * 1000000 %}{{ '{}'.format(l) }}",
    "{% set l = ['x' * 1000000] * 1000000 %}{{ l | string }}",
])
def test_growth_step_by_step_is_refused(tmp_path, template):
    message = render_error(tmp_path, template + "\n")
    assert message.startswith("t.j2:1: refused by the sandbox: ") and "(at most 1,000,000)" in message


def test_python_errors_in_a_template_are_errors_not_tracebacks(tmp_path):
    assert render_error(tmp_path, "ok\n{{ 1 / 0 }}\n") == "t.j2:2: template error: ZeroDivisionError: division by zero"
    assert render_error(tmp_path, "{{ 1 + 'a' }}\n") == (
        "t.j2:1: template error: TypeError: unsupported operand type(s) for +: 'int' and 'str'")
    recursive = "{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}\n"
    assert render_error(tmp_path, recursive).startswith("t.j2:1: template error: RecursionError: ")


def test_ten_to_the_ten_to_the_ten_is_small_in_jinja(tmp_path):
    # jinja2's ** groups to the left: 10 ** 10 ** 10 is (10 ** 10) ** 10 = 10 ** 100, which is fine
    (tmp_path / "t.j2").write_text("{{ 10 ** 10 ** 10 }}\n", encoding="utf-8")
    assert render_template("t", tmp_path, spec=load_spec("identities/aster.yaml")) == "1" + "0" * 100 + "\n"


# --- files outside the template folders --------------------------------------------------------------

SECRET = "OPENAI_API_KEY=sk-SECRET\n"


def test_a_template_that_links_outside_its_folder_is_refused(tmp_path):
    (tmp_path / "secret.txt").write_text(SECRET, encoding="utf-8")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "conforming.j2").symlink_to(tmp_path / "secret.txt")
    spec = load_spec("identities/aster.yaml")
    with pytest.raises(PersonaError) as e:
        render_template("conforming", tmp_path / "templates", spec=spec)
    assert e.value.message == f"{tmp_path}/templates/conforming.j2: is a link to a file outside the template folders"
    assert e.value.hint == ("copy the template into templates/ (or the --templates folder) instead of linking to it; "
                            "persona renders only files inside its template folders")
    with pytest.raises(PersonaError, match="outside the template folders"):
        template_hash("conforming", tmp_path / "templates")


def test_cli_render_does_not_print_a_linked_file(tmp_path):
    (tmp_path / "secret.txt").write_text(SECRET, encoding="utf-8")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "conforming.j2").symlink_to(tmp_path / "secret.txt")
    (tmp_path / "identities").mkdir()
    (tmp_path / "identities" / "a.yaml").write_text("name: a\nidentity: {name: A, description: A.}\n"
                                                    "traits: [{id: warm, description: Warm.}]\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "persona", "render", "identities/a.yaml"], capture_output=True,
                            text=True, cwd=tmp_path, timeout=HANG, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 1
    assert "SECRET" not in result.stdout + result.stderr
    assert result.stderr.startswith("error: templates/conforming.j2: is a link to a file outside the template folders")


@pytest.mark.parametrize("statement", ["{% include 'link.j2' %}", "{% extends 'link.j2' %}",
                                       "{% import 'link.j2' as x %}", "{% include 'up/secret.txt' %}"])
def test_include_extends_and_import_stay_inside_the_folders(tmp_path, statement):
    (tmp_path / "secret.txt").write_text(SECRET, encoding="utf-8")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "link.j2").symlink_to(tmp_path / "secret.txt")
    (tmp_path / "templates" / "up").symlink_to(tmp_path)  # a folder link out
    (tmp_path / "templates" / "t.j2").write_text(statement + "\n", encoding="utf-8")
    with pytest.raises(PersonaError) as e:
        render_template("t", tmp_path / "templates", spec=load_spec("identities/aster.yaml"))
    assert e.value.message.endswith(": is a link to a file outside the template folders")
    assert "SECRET" not in str(e.value)


def test_links_inside_the_folders_still_work(tmp_path):
    (tmp_path / "base.txt").write_text("Hello {{ spec.identity.name }}\n", encoding="utf-8")
    (tmp_path / "t.j2").symlink_to(tmp_path / "base.txt")
    (tmp_path / "judge.j2").symlink_to(REPO / "templates" / "judge.j2")  # a link to a built-in is inside too
    spec = load_spec("identities/aster.yaml")
    assert render_template("t", tmp_path, spec=spec) == "Hello Aster\n"
    assert render_template("judge", tmp_path, spec=spec, prompt="p", response="r") == render_template(
        "judge", spec=spec, prompt="p", response="r")


def test_a_template_that_is_a_symlink_loop(tmp_path):
    (tmp_path / "t.j2").symlink_to(tmp_path / "t.j2")
    with pytest.raises(PersonaError) as e:
        render_template("t", tmp_path, spec=load_spec("identities/aster.yaml"))
    assert e.value.message == f"{tmp_path}/t.j2: cannot follow the link: a symlink loop"


def test_template_too_large(tmp_path):
    (tmp_path / "big.j2").write_text("x" * 1_000_001, encoding="utf-8")
    with pytest.raises(PersonaError) as e:
        render_template("big", tmp_path, spec=load_spec("identities/aster.yaml"))
    assert e.value.message == f"{tmp_path}/big.j2: template is larger than 1,000,000 bytes"


def test_a_changed_template_is_rendered_anew(tmp_path):
    # the environment (and its compiled templates) is cached; an edited file must still be picked up
    spec = load_spec("identities/aster.yaml")
    (tmp_path / "t.j2").write_text("one\n", encoding="utf-8")
    assert render_template("t", tmp_path, spec=spec) == "one\n"
    stamp = (tmp_path / "t.j2").stat().st_mtime_ns
    (tmp_path / "t.j2").write_text("two\n", encoding="utf-8")
    os.utime(tmp_path / "t.j2", ns=(stamp, stamp))  # same size, same time: only the bytes differ
    assert render_template("t", tmp_path, spec=spec) == "two\n"
