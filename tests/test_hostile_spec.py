"""Hostile specs (issue 12): `persona validate` runs in CI on specs from pull requests, so no spec may hang
it, exhaust memory, end in a traceback or make it print other files. Each case is one clear line with
file:line:col and a hint, and a non-zero exit.

Cases that used to hang run `persona` in a subprocess with a timeout, so that a regression fails the
test instead of hanging the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO
from persona.checks import Check, check_text
from persona.errors import Problem
from persona.spec import check_file, load_spec

HANG = 20  # seconds: far more than any case needs, far less than "forever"

# every target machine-checked, so `persona validate` has no coverage warning to add to these tests' outputs
GOOD = "name: good\nidentity: {name: Good, description: Fine.}\nconstraints: [{id: short, description: Short., check: {max_words: 90}}]\n"


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def persona(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "persona", *args], capture_output=True, text=True, cwd=cwd,
                            env=env, timeout=HANG)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


def validate_one(tmp_path: Path, name: str, text: str | bytes) -> str:
    """`persona validate NAME` in tmp_path: exit 1, one problem; returns that line."""
    write(tmp_path / name, text)
    result = persona("validate", name, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr == "1 spec file checked: 0 valid, 1 invalid (1 problem)\n"
    (line,) = result.stdout.splitlines()
    return line


# --- regular expressions that backtrack catastrophically -------------------------------------------------

REDOS = """\
name: redos
identity: {name: R, description: R.}
constraints:
  - id: no-a
    description: No a.
    check:
      forbidden_patterns: ['(a+)+$']
examples:
  - {prompt: p, response: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab}
"""


def test_catastrophic_pattern_against_an_example_is_a_problem_not_a_hang(tmp_path):
    assert validate_one(tmp_path, "redos.yaml", REDOS) == (
        "redos.yaml:7:28: constraints[0].check.forbidden_patterns[0]: the pattern '(a+)+$' took more than 1 s on "
        "examples[0].response (hint: the pattern backtracks catastrophically: avoid a repetition inside a "
        "repetition, such as (a+)+ or (a|aa)*; e.g. write a+$ instead of (a+)+$)")


def test_catastrophic_pattern_in_the_judge_names_pattern_and_spec_file(tmp_path):
    # What the rules judge calls once per response: a PersonaError naming the pattern and where it is written.
    write(tmp_path / "redos.yaml", REDOS.split("examples:")[0])
    code = textwrap.dedent(f"""
        from persona.checks import check_text
        from persona.errors import PersonaError
        from persona.spec import load_spec
        spec = load_spec({str(tmp_path / 'redos.yaml')!r})
        try:
            check_text(spec.constraints[0].check, "a" * 40 + "b")
        except PersonaError as e:
            print(e.message)
            print(e.hint)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.stdout.splitlines() == [
        f"{tmp_path}/redos.yaml:6:5: the forbidden pattern '(a+)+$' took more than 1 s on a 41-character text",
        "the pattern backtracks catastrophically: avoid a repetition inside a repetition, such as (a+)+ or (a|aa)*; "
        "e.g. write a+$ instead of (a+)+$"]


def test_check_text_time_limit_covers_required_patterns_and_keeps_working_after():
    from persona.checks import PatternTimeout

    check = Check(required_patterns=("x", "^(a|aa)+$"), source="spec.yaml:3:5")
    with pytest.raises(PatternTimeout) as e:
        check_text(check, "a" * 40 + "b")
    assert (e.value.kind, e.value.index, e.value.pattern) == ("required", 1, "^(a|aa)+$")
    assert e.value.message.startswith("spec.yaml:3:5: the required pattern '^(a|aa)+$' took more than 1 s")
    # the alarm is gone afterwards: a normal check still works, and nothing fires later
    assert check_text(Check(forbidden_patterns=(r"\bOpenAI\b",)), "made by openai") == [
        "matches the forbidden pattern '\\\\bOpenAI\\\\b'"]
    import time
    time.sleep(1.1)  # an alarm left armed would interrupt this


def test_pattern_too_deeply_nested_for_the_regex_parser(tmp_path):
    text = REDOS.split("examples:")[0].replace("'(a+)+$'", "'" + "(" * 5000 + ")" * 5000 + "'")
    assert validate_one(tmp_path, "nested.yaml", text) == (
        "nested.yaml:7:28: constraints[0].check.forbidden_patterns[0]: regular expression too large or too complex "
        "(10,000 characters) (hint: write a shorter pattern)")


# --- YAML: aliases, nesting, characters, numbers ---------------------------------------------------------


def billion_laughs(levels: int = 10) -> str:
    lines = ["name: bomb", "lol0: &lol0 [lol]"]
    lines += [f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_a_problem_not_a_memory_explosion(tmp_path):
    assert validate_one(tmp_path, "bomb.yaml", billion_laughs()) == (
        "bomb.yaml:7:1: lol5: more than 100,000 keys and values once aliases (*name) and merge keys (<<) are "
        "expanded (hint: a spec needs far fewer; repeat less through aliases, or split the file with `extends:`)")


def merges_copy_repeated_keys() -> bool:
    """Whether this PyYAML copies a key once per merge (before 6.0.4) or merges each key once (6.0.4)."""
    import yaml

    loader = yaml.SafeLoader("a: &a {k: v}\nb: {<<: [*a, *a]}\n")
    merged = loader.get_single_node().value[1][1]
    loader.flatten_mapping(merged)
    loader.dispose()
    return len(merged.value) > 1


def test_merge_key_bomb_is_a_problem(tmp_path):
    # Each level merges the previous one 10 times: 10^12 keys where every merge copies its keys. PyYAML
    # 6.0.4 merges each key once (the same 10 keys at every level), which defuses it: then the file is
    # small and its 12 top-level keys are just unknown.
    lines = ["name: merges", "m0: &m0 {" + ", ".join(f"k{j}: v" for j in range(10)) + "}"]
    lines += [f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 10)}]}}" for i in range(1, 12)]
    if merges_copy_repeated_keys():
        assert "more than 100,000 keys and values once aliases (*name) and merge keys (<<) are expanded" in (
            validate_one(tmp_path, "merges.yaml", "\n".join(lines) + "\n"))
        return
    write(tmp_path / "merges.yaml", "\n".join(lines) + "\n")
    result = persona("validate", "merges.yaml", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr == "1 spec file checked: 0 valid, 1 invalid (12 problems)\n"
    assert [line.split(": ", 2)[2].split(" (hint")[0] for line in result.stdout.splitlines()] == [
        f"unknown key 'm{i}'" for i in range(12)]


def test_a_merge_key_that_merges_its_own_mapping(tmp_path):
    assert validate_one(tmp_path, "self.yaml", "name: x\na: &a {x: 1, <<: *a}\n") == (
        "self.yaml:2:4: a merge key (<<) merges the mapping it is in (hint: remove the `<<: *name` that refers "
        "back to its own mapping)")


def test_alias_inside_a_key_is_not_expanded(tmp_path):
    levels = ["&l0 [lol]"] + [f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    text = f"name: k\n? [{', '.join(levels)}]\n: x\n"
    assert validate_one(tmp_path, "key.yaml", text) == (
        "key.yaml:2:3: key is a list, not text (hint: keys must be plain text such as `name:`)")


def test_very_deep_nesting_is_a_problem_not_a_recursion_error(tmp_path):
    assert validate_one(tmp_path, "deep.yaml", "name: deep\nprobes: " + "[" * 10000 + "]" * 10000 + "\n") == (
        "deep.yaml:2:40: nested more than 32 levels deep (hint: a spec needs only a few levels; check the brackets "
        "and indentation)")


def test_aliases_nested_in_aliases_count_towards_the_depth(tmp_path):
    lines = ["name: x", "a0: &a0 " + "[" * 30 + "]" * 30]
    lines += [f"a{i}: &a{i} " + "[" * 29 + f"*a{i - 1}" + "]" * 29 for i in range(1, 40)]
    line = validate_one(tmp_path, "nested.yaml", "\n".join(lines) + "\n")
    assert "nested more than 32 levels deep once aliases (*name) are expanded" in line


def test_control_character_in_the_file(tmp_path):
    assert validate_one(tmp_path, "bell.yaml", "name: bell\nidentity: {name: B\x07, description: B.}\n") == (
        "bell.yaml:2:19: control character U+0007 is not allowed in YAML (hint: delete it (an editor may show it "
        "as ^G); to put it in text, write the escape \\x07 inside double quotes)")


def test_huge_integer_is_a_problem_not_a_value_error(tmp_path):
    text = "name: big\nidentity: {name: B, description: B.}\ntraits:\n  - {id: a, description: A., weight: " \
           + "9" * 5000 + "}\n"
    assert validate_one(tmp_path, "big.yaml", text) == (
        "big.yaml:4:38: traits[0].weight: number is too long (5,000 characters; at most 100) (hint: write a "
        "shorter number, or quote the value if it is text)")


@pytest.mark.parametrize("value", [".nan", ".NaN", ".inf", "-.Inf", "1.0e+999"])
def test_non_finite_numbers_are_rejected(tmp_path, value):
    spec = write(tmp_path / "w.yaml", f"name: w\nidentity: {{name: W, description: W.}}\n"
                                      f"traits:\n  - {{id: a, description: A., weight: {value}}}\n")
    assert [p.format() for p in check_file(spec)] == [
        f"{spec}:4:38: traits[0].weight: {value!r} is not a finite number (hint: write a number such as 1 or 0.5; "
        ".nan and .inf are not allowed)"]


def test_impossible_date_is_a_problem(tmp_path):
    assert validate_one(tmp_path, "date.yaml", "name: d\ndescription: 2001-13-45\n") == (
        "date.yaml:2:14: description: YAML cannot read '2001-13-45': month must be in 1..12 (hint: quote the "
        "value if it is text)")


def test_file_too_large(tmp_path):
    assert validate_one(tmp_path, "large.yaml", "name: large\n# " + "x" * 1_000_000 + "\n") == (
        "large.yaml:1:1: file is too large (1,000,015 bytes; at most 1,000,000) (hint: a spec needs far less; "
        "split it with `extends:`)")


def test_too_many_values_stop_the_parser_early(tmp_path):
    # half a million values in under 1 MB: without aliases, but the pure-Python parser would take ~10 s and
    # ~400 MB to build them all; it stops at the limit instead
    assert validate_one(tmp_path, "flow.yaml", "name: x\np: [" + "1," * 490_000 + "1]\n") == (
        "flow.yaml:2:199995: more than 100,000 keys and values once aliases (*name) and merge keys (<<) are "
        "expanded (hint: a spec needs far fewer; repeat less through aliases, or split the file with `extends:`)")


def test_at_most_200_problems_per_file(tmp_path):
    write(tmp_path / "keys.yaml", "name: x\n" + "".join(f"k{i}: v\n" for i in range(10_000)))
    result = persona("validate", "keys.yaml", cwd=tmp_path)
    lines = result.stdout.splitlines()
    assert len(lines) == 201
    assert lines[0] == ("keys.yaml:1:1: more problems in this file than the 200 shown; stopped looking "
                        "(hint: fix these first)")


def test_long_lists_merge_in_linear_time(tmp_path):
    # `extends` concatenates lists without repeats; comparing each item with every other took minutes here
    seeds = lambda prefix: "probes:\n  seeds:\n" + "".join(f"  - {prefix}{i}\n" for i in range(40_000))
    write(tmp_path / "base.yaml", "name: base\nkind: component\n" + seeds("b"))
    write(tmp_path / "top.yaml", GOOD + "extends: [base.yaml]\n" + seeds("t"))
    result = persona("validate", "top.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout


# --- a folder keeps validating after a bad file ----------------------------------------------------------


def test_one_bad_file_does_not_stop_the_folder(tmp_path):
    write(tmp_path / "specs" / "a-good.yaml", GOOD)
    write(tmp_path / "specs" / "b-deep.yaml", "name: deep\nprobes: " + "[" * 5000 + "]" * 5000 + "\n")
    write(tmp_path / "specs" / "c-bell.yaml", "name: bell\x07\n")
    write(tmp_path / "specs" / "d-big.yaml", "name: big\nn: " + "1" * 5000 + "\n")
    write(tmp_path / "specs" / "e-good.yaml", GOOD.replace("good", "other"))
    result = persona("validate", "specs/", cwd=tmp_path)
    assert result.returncode == 1
    assert [line.split(": ")[0] for line in result.stdout.splitlines()] == [
        "specs/b-deep.yaml:2:40", "specs/c-bell.yaml:1:11", "specs/d-big.yaml:2:4"]
    assert result.stderr == "5 spec files checked: 2 valid, 3 invalid (3 problems)\n"


def test_an_unexpected_error_becomes_a_problem_of_that_file(tmp_path, monkeypatch):
    import persona.spec

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(persona.spec, "_check_merged", broken)
    spec = write(tmp_path / "a.yaml", GOOD)
    assert check_file(spec) == [Problem(str(spec), 1, 1, "", "persona could not check this file: RuntimeError",
                                        "this is a bug in persona; please report it with the file")]


# --- extends: only inside the spec's folder; symlink loops ------------------------------------------------

SECRET = "api_key: SECRET-0123456789\n"


def test_extends_outside_the_folder_is_refused_without_quoting_the_file(tmp_path):
    write(tmp_path / "secret.yaml", SECRET)
    write(tmp_path / "specs" / "a.yaml", GOOD + "extends: [../secret.yaml]\n")
    result = persona("validate", "specs/a.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == (
        "specs/a.yaml:4:11: extends[0]: extended file '../secret.yaml' is outside specs/, the folder of the spec "
        "being loaded (hint: `extends` may only name files in that folder or its subfolders (after following "
        "symlinks); copy the file there)\n")


@pytest.mark.parametrize("target", ["/etc/passwd", "{tmp}/secret.yaml", "link.yaml", "sub/../../secret.yaml",
                                    "folder-link/secret.yaml"])
def test_every_way_out_of_the_folder_is_refused(tmp_path, target):
    write(tmp_path / "secret.yaml", SECRET)
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "link.yaml").symlink_to(tmp_path / "secret.yaml")
    (tmp_path / "specs" / "folder-link").symlink_to(tmp_path)
    (tmp_path / "specs" / "sub").mkdir()
    spec = write(tmp_path / "specs" / "a.yaml", GOOD + f"extends: ['{target.format(tmp=tmp_path)}']\n")
    (problem,) = check_file(spec)
    assert problem.path == "extends[0]" and " is outside " in problem.message
    assert "SECRET" not in problem.format()


def test_extends_inside_the_folder_and_its_subfolders_still_works(tmp_path):
    write(tmp_path / "parts" / "base.yaml", "name: base\nkind: component\nethics: [{id: honest, description: H.}]\n")
    write(tmp_path / "top.yaml", GOOD + "extends: [parts/../parts/base.yaml]\n")
    (tmp_path / "alias.yaml").symlink_to(tmp_path / "parts" / "base.yaml")  # a link that stays inside is fine
    write(tmp_path / "top2.yaml", GOOD + "extends: [alias.yaml]\n")
    assert [e.id for e in load_spec(tmp_path / "top.yaml").ethics] == ["honest"]
    assert [e.id for e in load_spec(tmp_path / "top2.yaml").ethics] == ["honest"]


def test_a_spec_that_is_a_symlink_out_of_its_folder_is_not_read(tmp_path):
    write(tmp_path / "secret.yaml", SECRET)
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "evil.yaml").symlink_to(tmp_path / "secret.yaml")
    write(tmp_path / "specs" / "good.yaml", GOOD)
    result = persona("validate", "specs/", cwd=tmp_path)
    assert result.stdout == (
        "specs/evil.yaml:1:1: is a symlink to a file outside its folder (hint: copy the file into the folder "
        "instead of linking to it; persona reads only files inside the folder of the spec it loads)\n")
    assert result.stderr == "2 spec files checked: 1 valid, 1 invalid (1 problem)\n"


def test_symlink_loops_are_problems(tmp_path):
    (tmp_path / "loop.yaml").symlink_to(tmp_path / "loop.yaml")
    (tmp_path / "x.yaml").symlink_to(tmp_path / "y.yaml")
    (tmp_path / "y.yaml").symlink_to(tmp_path / "x.yaml")
    write(tmp_path / "a.yaml", GOOD + "extends: [x.yaml]\n")
    result = persona("validate", ".", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "a.yaml:4:11: extends[0]: cannot follow 'x.yaml': a symlink loop or an invalid name (hint: name a .yaml "
        "file next to this one or in a subfolder)",
        "loop.yaml:1:1: cannot follow the path: a symlink loop or an invalid name (hint: point the symlink at a "
        "real file)",
        "x.yaml:1:1: cannot follow the path: a symlink loop or an invalid name (hint: point the symlink at a real "
        "file)",
        "y.yaml:1:1: cannot follow the path: a symlink loop or an invalid name (hint: point the symlink at a real "
        "file)"]


def test_extends_name_with_a_nul_character(tmp_path):
    spec = write(tmp_path / "a.yaml", GOOD + 'extends: ["a\\0.yaml"]\n')
    assert [p.message for p in check_file(spec)] == ["cannot follow 'a\\x00.yaml': a symlink loop or an invalid name"]


def test_extends_chain_length_is_limited(tmp_path):
    for i in range(30):
        write(tmp_path / f"c{i}.yaml", f"name: c{i}\nkind: component\nextends: [c{i + 1}.yaml]\n")
    write(tmp_path / "c30.yaml", "name: c30\nkind: component\n")
    (problem,) = check_file(tmp_path / "c0.yaml")
    assert problem.format() == (
        f"{tmp_path}/c15.yaml:3:11: extends[0]: too many extended files (at most 100 in all, 16 in a chain) "
        "(hint: merge some of the components into one file)")


# --- YAML escapes that turn patterns into control characters: a warning -----------------------------------

BACKSPACE = """\
name: refunds
identity: {name: R, description: R.}
constraints:
  - id: no-refund-promises
    description: Never promise a refund.
    check:
      forbidden_patterns: ["\\bI will refund\\b"]
      forbidden_phrases: ['fine', "\\a"]
"""


def test_backspace_in_a_double_quoted_pattern_is_a_warning(tmp_path):
    write(tmp_path / "refunds.yaml", BACKSPACE)
    result = persona("validate", "refunds.yaml", cwd=tmp_path)
    assert result.returncode == 0  # a warning does not make the spec invalid
    assert result.stdout.splitlines() == [
        "refunds.yaml:7:28: constraints[0].check.forbidden_patterns[0]: warning: '\\x08I will refund\\x08' contains "
        "a backspace character (U+0008), which responses do not contain (hint: in double quotes YAML turns \\b into "
        "a backspace; use single quotes, '\\bI will refund\\b', or write \\\\b in double quotes)",
        "refunds.yaml:8:35: constraints[0].check.forbidden_phrases[1]: warning: '\\x07' contains a bell character "
        "(U+0007), which responses do not contain (hint: in double quotes YAML turns \\a into a bell; use single "
        "quotes, '\\a', or write \\\\a in double quotes)"]
    assert result.stderr == "1 spec file checked: 1 valid, 0 invalid (2 warnings)\n"
    github = persona("validate", "refunds.yaml", "--format", "github", cwd=tmp_path)
    assert github.stdout.startswith(
        "::warning file=refunds.yaml,line=7,col=28,title=persona validate::constraints[0].check.forbidden_patterns[0]: "
        "'\\x08I will refund\\x08' contains a backspace")
    assert load_spec(tmp_path / "refunds.yaml").constraints[0].check.forbidden_patterns == ("\bI will refund\b",)


def test_warnings_and_errors_together(tmp_path):
    write(tmp_path / "both.yaml", BACKSPACE + "examples: [{prompt: p, response: fine}]\n")
    result = persona("validate", "both.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == "1 spec file checked: 0 valid, 1 invalid (1 problem, 2 warnings)\n"


def test_long_values_are_cut_in_messages(tmp_path):
    spec = write(tmp_path / "long.yaml", f"name: {'x' * 100_000}\nkind: {'y' * 100_000}\n")
    assert [p.format() for p in check_file(spec)] == [
        f"{spec}:1:7: name: is longer than 64 characters (100,000) (hint: shorten it)",
        f"{spec}:2:7: kind: '{'y' * 56}... is not one of 'identity', 'component' (hint: use one of 'identity', "
        "'component')"]


def test_a_line_break_in_a_key_or_file_name_cannot_forge_output_lines(tmp_path):
    # a key "x\nidentities/brand.yaml:1:1: ..." would otherwise print a line that looks like persona's own
    write(tmp_path / "keys.yaml", 'name: k\n"x\\nfake.yaml:1:1: ok": 1\n')
    write(tmp_path / "a\nb.yaml", "name: x\nextends: [\"c\\nd.yaml\"]\n")
    result = persona("validate", ".", cwd=tmp_path)
    assert result.stdout.splitlines() == [
        "a\\nb.yaml:2:11: extends[0]: extended file 'c\\nd.yaml' not found (looked for c\\nd.yaml) (hint: paths in "
        "`extends` are relative to the file that contains them)",
        "keys.yaml:2:1: ['x\\nfake.yaml:1:1: ok']: unknown key 'x\\nfake.yaml:1:1: ok' (hint: allowed keys here: "
        "version, name, kind, extends, identity, traits, style, constraints, ethics, examples, references, probes, tests)"]
