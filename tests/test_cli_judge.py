"""`persona judge`, `persona build` and `persona stats` on run folders made with the fake backend, and
`persona judge --calibrate`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from persona.cli import app

runner = CliRunner()


@pytest.fixture
def run(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["generate", "identities/aster.yaml", "-b", "fake", "--limit", "6", "--replay", "0",
                                 "--no-demonstrations", "--out", str(out),
                                 "--judge", "rules"])
    assert result.exit_code == 0, result.output
    return out


def test_generate_prints_the_dataset_summary(run):
    build = json.loads((run / "datasets/build.json").read_text())
    assert build["judge"] == "rules" and build["candidates"] == 12
    assert (run / "datasets/dpo/README.md").exists() and (run / "datasets/kto/train.jsonl").exists()


def test_same_judge_again_judges_nothing_and_another_judge_only_judges(run):
    result = runner.invoke(app, ["judge", str(run), "--judge", "rules"])
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("judged 0 responses with rules (24 scored, 0 unjudged")
    responses_before = (run / "responses.jsonl").read_text()
    # an llm judge whose model (the fake backend) never replies with JSON: every record ends up unjudged,
    # with its raw replies kept - and the responses are untouched
    result = runner.invoke(app, ["judge", str(run), "--judge", "llm", "--judge-backend", "fake"])
    assert result.exit_code == 0, result.output
    assert "judged 24 responses with llm:fake:fake-model (0 scored, 24 unjudged" in result.stderr
    assert (run / "responses.jsonl").read_text() == responses_before
    unjudged = [json.loads(line) for line in (run / "judgements.jsonl").read_text().splitlines()][-1]
    assert unjudged["status"] == "unjudged" and "--- retry ---" in unjudged["raw"]
    assert unjudged["error"].startswith("unparseable judge reply")


def test_build_uses_the_last_judge_and_reports(run):
    result = runner.invoke(app, ["build", str(run), "--judge", "rules", "--margin", "0.5"])
    assert result.exit_code == 0, result.output
    assert "dpo/ipo pairs:" in result.stderr and "kto rows:" in result.stderr
    assert json.loads((run / "datasets/build.json").read_text())["settings"]["margin"] == 0.5


def test_build_without_judgements_of_that_judge(run):
    result = runner.invoke(app, ["build", str(run), "--judge", "llm"])
    assert result.exit_code == 1
    assert result.stderr == (f"error: no judgements by 'llm:hf:SmolLM2-135M-Instruct' in {run}\n"
                             f"hint: run: persona judge {run} --judge llm\n")


def test_stats(run):
    result = runner.invoke(app, ["stats", str(run)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1].split()[:2] == ["prompts", "6"] and lines[2].split()[:2] == ["responses", "24"]
    assert any(line.startswith("judgements      24  by rules") for line in lines)
    assert any(line.startswith("scores of violating responses") for line in lines)
    numbers = json.loads(runner.invoke(app, ["stats", str(run), "--json"]).stdout)
    assert numbers["responses"] == {"conforming": 12, "violating": 12, "demonstration": 0, "replay": 0}
    assert numbers["tokens"]["completion"] > 0


def test_not_a_run_folder_and_older_format(tmp_path, run):
    result = runner.invoke(app, ["stats", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr == (f"error: {tmp_path} is not a persona run folder (no run.json)\n"
                             "hint: pass the folder `persona generate` wrote, e.g. runs/brand\n")
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "format": 0}))
    result = runner.invoke(app, ["judge", str(run), "--judge", "rules"])
    assert result.exit_code == 1
    assert f"error: {run} was written in run format 0; this persona reads format 1" in result.stderr


def test_unknown_judge_and_misplaced_options(run):
    result = runner.invoke(app, ["judge", str(run), "--judge", "rulez"])
    assert result.exit_code == 1 and "hint: did you mean 'rules'?" in result.stderr
    result = runner.invoke(app, ["judge", str(run), "--judge", "rules", "--judge-backend", "openai"])
    assert result.exit_code == 1 and "do not apply to the 'rules' judge" in result.stderr


def test_calibrate_the_rules_judge():
    result = runner.invoke(app, ["judge", "--calibrate", "--judge", "rules"])
    assert result.exit_code == 0, result.output
    header, row, *rest = result.stdout.splitlines()
    assert header.split() == ["judge", "n", "accuracy", "kappa", "unjudged"]
    name, n, accuracy, kappa, unjudged = row.split()
    assert (name, n, unjudged) == ("rules", "48", "0")
    assert float(accuracy.rstrip("%")) >= 80.0
    assert any(line.strip().startswith("brand") for line in rest)


def test_pairwise_needs_a_comparing_judge(run):
    result = runner.invoke(app, ["build", str(run), "--judge", "rules", "--pairwise"])
    assert result.exit_code == 1
    assert "error: --pairwise needs a judge that compares two responses; 'rules' does not" in result.stderr


def test_judge_and_build_use_the_runs_templates(tmp_path):
    import shutil

    templates = tmp_path / "templates"
    shutil.copytree("templates", templates)
    (templates / "judge.j2").write_text((templates / "judge.j2").read_text() + "\nBe terse.\n")  # a user's edit
    out = tmp_path / "run"
    common = ["--judge", "llm", "--judge-backend", "fake"]
    result = runner.invoke(app, ["generate", "identities/aster.yaml", "-b", "fake", "--limit", "2", "--replay", "0",
                                 "--no-demonstrations", "--out", str(out),
                                 "--templates", str(templates), *common])
    # the scripted backend writes no judge JSON: every response is unjudged, and generate says so (exit 1)
    assert result.exit_code == 1 and "error: nothing to train on: the llm:fake:fake-model judge judged none" in result.stderr
    # the same judge from `persona judge` finds every judgement already made (same templates, same keys)
    result = runner.invoke(app, ["judge", str(out), *common])
    assert result.exit_code == 0 and result.stderr.startswith("judged 0 responses"), result.output
    result = runner.invoke(app, ["build", str(out), "--judge", "llm", "--judge-backend", "fake"])
    assert result.exit_code == 1 and "judged none of the 8 responses" in result.stderr, result.output
