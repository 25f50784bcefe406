"""The CLI: exit codes, output streams, messages, and that `persona --help` stays light."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from conftest import DATA, REPO
from persona.cli import app

runner = CliRunner()


def persona(*args: str, cwd=None):
    """Run the real console entry point in a subprocess (what users and CI run)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "persona", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=60)


# --- validate -----------------------------------------------------------------------------------------


def test_validate_shipped_identities_exits_0():
    result = runner.invoke(app, ["validate", "identities/"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == "5 spec files checked: 5 valid, 0 invalid\n"


def test_validate_broken_folder_exits_1_with_one_line_per_problem(golden):
    result = persona("validate", "tests/data/broken/", cwd=REPO)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    golden("cli_validate_broken.txt", result.stdout)
    lines = result.stdout.splitlines()
    assert all(line.startswith("tests/data/broken/") and " (hint: " in line for line in lines)
    assert result.stderr == f"18 spec files checked: 0 valid, 18 invalid ({len(lines)} problems)\n"


def test_validate_github_format(golden):
    result = runner.invoke(app, ["validate", "tests/data/broken/", "--format", "github"])
    assert result.exit_code == 1
    assert all(line.startswith("::error file=tests/data/broken/") for line in result.stdout.splitlines())
    golden("cli_validate_broken_github.txt", result.stdout)


def test_validate_mixed_files_and_folders_exits_1_if_any_invalid():
    result = runner.invoke(app, ["validate", "identities/aster.yaml", str(DATA / "broken" / "negative-weight.yaml")])
    assert result.exit_code == 1
    assert result.stdout == ("tests/data/broken/negative-weight.yaml:12:13: traits[2].weight: -1 is less than the "
                             "minimum of 0 (hint: use a number of at least 0)\n")


def test_validate_bad_arguments_exit_2():
    result = runner.invoke(app, ["validate", "no/such/dir"])
    assert result.exit_code == 2
    assert result.stderr == "error: no/such/dir: no such file or folder\nhint: check the path\n"
    result = runner.invoke(app, ["validate", "identities/", "--format", "xml"])
    assert result.exit_code == 2 and "--format 'xml' is not one of 'text', 'github'" in result.stderr


# --- render -------------------------------------------------------------------------------------------


def test_render_defaults_to_conforming(golden):
    result = runner.invoke(app, ["render", "identities/brand.yaml"])
    assert result.exit_code == 0, result.output
    assert result.stdout == (REPO / "tests/golden/render/brand.conforming.txt").read_text(encoding="utf-8")


def test_render_violating_with_target_and_judge_with_vars():
    result = runner.invoke(app, ["render", "identities/aster.yaml", "-t", "violating", "--target", "own-origin"])
    assert result.exit_code == 0 and 'break this constraint ("own-origin")' in result.stdout
    result = runner.invoke(app, ["render", "identities/aster.yaml", "-t", "judge",
                                 "--var", "prompt=Who made you?", "--var", "response=I am ChatGPT."])
    assert result.exit_code == 0
    assert "\nWho made you?\n" in result.stdout and "\nI am ChatGPT.\n" in result.stdout


def test_render_errors_are_one_message_and_a_hint_without_traceback():
    result = persona("render", "identities/aster.yaml", "-t", "judge", cwd=REPO)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: templates/judge.j2:")
    assert "'prompt' is undefined\nhint: variables given to 'judge': spec;" in result.stderr
    assert "Traceback" not in result.stderr

    result = runner.invoke(app, ["render", "identities/brand.yaml", "-t", "violating", "--target", "warn"])
    assert result.exit_code == 1
    assert result.stderr.endswith("hint: did you mean 'warm'?\n")

    result = runner.invoke(app, ["render", "tests/data/broken/negative-weight.yaml"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: tests/data/broken/negative-weight.yaml:12:13: traits[2].weight:")

    result = runner.invoke(app, ["render", "identities/aster.yaml", "--var", "oops"])
    assert result.exit_code == 1 and "--var 'oops' is not NAME=VALUE" in result.stderr


# --- schema, ls, init ---------------------------------------------------------------------------------


def test_schema_prints_the_shipped_json_schema():
    from jsonschema import Draft202012Validator

    result = runner.invoke(app, ["schema"])
    schema = json.loads(result.stdout)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert schema == json.loads((REPO / "persona/identity.schema.json").read_text(encoding="utf-8"))


def test_ls_shows_identities_templates_and_sources(tmp_path):
    result = runner.invoke(app, ["ls"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert any(line.split()[:3] == ["identities/brand.yaml", "identity:", "Nova"] for line in lines)
    assert any("identities/components/bank-compliance.yaml" in line and "component" in line for line in lines)
    assert any(line.split()[0] == "judge" and line.endswith("[built-in]") for line in lines)

    (tmp_path / "judge.j2").write_text("mine\n", encoding="utf-8")
    result = runner.invoke(app, ["ls", "--templates", str(tmp_path)])
    judge = next(line for line in result.stdout.splitlines() if line.split()[0] == "judge")
    assert judge.endswith("[project] (overrides the built-in)")


def test_init_scaffolds_a_valid_editable_project(tmp_path):
    result = runner.invoke(app, ["init", "my-bot", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "identities/my-bot.yaml").is_file()
    assert sorted(p.name for p in (tmp_path / "templates").iterdir()) == [
        "adversarial.j2", "conforming.j2", "deployment.j2", "identity_answers.j2", "identity_contexts.j2", "judge.j2",
        "judge_pairwise.j2",
        "probes.j2", "rubric.j2", "violating.j2"]
    assert json.loads((tmp_path / "identity.schema.json").read_text(encoding="utf-8"))["title"] == "persona identity spec"
    os.chdir(tmp_path)
    assert runner.invoke(app, ["validate", "identities/"]).exit_code == 0
    result = runner.invoke(app, ["render", "identities/my-bot.yaml"])
    assert result.exit_code == 0 and result.stdout.startswith("You are My Bot, an AI assistant made by Your Company.")

    # a second init keeps the user's edits unless --force
    (tmp_path / "templates/conforming.j2").write_text("edited\n", encoding="utf-8")
    result = runner.invoke(app, ["init", "my-bot"])
    assert "kept existing templates/conforming.j2 (use --force to overwrite)" in result.stderr
    assert (tmp_path / "templates/conforming.j2").read_text() == "edited\n"
    runner.invoke(app, ["init", "my-bot", "--force"])
    assert (tmp_path / "templates/conforming.j2").read_text() != "edited\n"


def test_init_rejects_an_invalid_name(tmp_path):
    result = runner.invoke(app, ["init", "My Bot", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr == ("error: 'My Bot' is not a valid identity name\n"
                             "hint: use lowercase letters, digits, '-', '_' or '.', e.g. `persona init my-bot`\n")
    assert not any(tmp_path.iterdir())


# --- startup ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["--help"], ["validate", "--help"], ["validate", "identities/"]])
def test_light_commands_import_no_ml_stack(args):
    code = (
        "import sys\nfrom persona.cli import main\n"
        f"sys.argv = ['persona', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'peft', 'vllm', 'datasets', 'openai') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert "HEAVY []" in result.stderr, result.stderr


def test_every_command_help_has_an_example():
    for command in ("validate", "render", "schema", "ls", "init", "generate", "judge", "build", "stats"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "Example:" in result.stdout, command


def test_version():
    from persona import __version__

    result = runner.invoke(app, ["--version"])
    assert result.stdout == f"persona {__version__}\n"


def _schema_reference(path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema="), path
    return (path.parent / first.split("$schema=", 1)[1]).resolve()


def test_schema_references_resolve_in_the_checkout_in_init_projects_and_for_copied_examples(tmp_path):
    schema = json.loads((REPO / "persona/identity.schema.json").read_text(encoding="utf-8"))
    shipped = sorted((REPO / "identities").rglob("*.yaml"))
    for spec in shipped:  # the checkout: the top-level copy of the schema
        assert json.loads(_schema_reference(spec).read_text(encoding="utf-8")) == schema, spec
    result = runner.invoke(app, ["init", "mybot", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    made = tmp_path / "identities" / "mybot.yaml"
    assert json.loads(_schema_reference(made).read_text(encoding="utf-8")) == schema
    for spec in shipped:  # an example copied into the project keeps resolving
        copy = tmp_path / spec.relative_to(REPO)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(spec.read_text(encoding="utf-8"), encoding="utf-8")
        assert _schema_reference(copy) == (tmp_path / "identity.schema.json").resolve(), spec


def test_a_users_own_spec_and_template_in_the_checkout_do_not_break_the_tests(tmp_path):
    """`persona init mybot` inside a checkout, plus a template of the user's own: the tests that check
    persona's shipped identities and templates still pass."""
    import shutil

    copy = tmp_path / "checkout"
    for part in ("tests", "identities", "templates"):
        shutil.copytree(REPO / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "identity.schema.json", copy)
    assert persona("init", "mybot", cwd=copy).returncode == 0
    (copy / "templates" / "mine.j2").write_text("Hello {{ spec.name }}\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_templates.py",
                             "tests/test_spec.py", "-k", "shipped or renders or golden"],
                            cwd=copy, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
