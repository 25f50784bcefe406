"""Adding a backend or a judge is one file plus one registry row: a throwaway backend and judge, written in this
test's folder and registered with a row each, run through `persona generate`; what they take and refuse comes
from their own constructors (no table elsewhere names them)."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from persona.backends import BACKENDS
from persona.cli import app
from persona.judges import JUDGES

runner = CliRunner()

ECHO = '''
from persona.backends import Completion, Result


class EchoBackend:
    name = "echo"
    local = True
    default_model = "echo-1"

    def __init__(self, model=None, shout: bool = False):
        self.model, self.shout = model or self.default_model, shout

    def complete(self, requests):
        for request in requests:
            text = "I am Aster, made by Lumen Labs. " + request.messages[-1]["content"]
            text = text.upper() if self.shout else text
            yield Result(request, tuple(Completion(text, 1, 1, "stop", 0.0) for _ in range(request.params.n)))

    def close(self):
        pass
'''

LENGTH = '''
from persona.judges import Judgement


class LengthJudge:
    name = "length"
    cost = "counts characters"

    def __init__(self, longest: int = 80):
        self.longest = longest
        self.fingerprint = f"length|{longest}"

    def judge(self, spec, items):
        for item in items:
            kept = len(item.response) <= self.longest
            yield item, Judgement("ok", 10.0 if kept else 0.0, {}, f"{len(item.response)} characters")

    def close(self):
        pass
'''


@pytest.fixture
def registered(tmp_path, monkeypatch):
    (tmp_path / "echo_backend.py").write_text(textwrap.dedent(ECHO))
    (tmp_path / "length_judge.py").write_text(textwrap.dedent(LENGTH))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(BACKENDS, "echo", "echo_backend:EchoBackend")  # the one row each
    monkeypatch.setitem(JUDGES, "length", "length_judge:LengthJudge")
    yield
    for name in ("echo_backend", "length_judge"):
        sys.modules.pop(name, None)


def test_a_backend_and_a_judge_from_another_module_run_with_one_row_each(registered, tmp_path):
    args = ["generate", "identities/aster.yaml", "-b", "echo", "--limit", "2", "--prompts-per-target", "0",
            "--replay", "0", "--judge", "length", "-o", "shout=true"]
    planned = runner.invoke(app, [*args[:-2], "--dry-run"])
    assert planned.exit_code == 0, planned.stderr
    assert "judge: length (counts characters)" in planned.stdout  # the judge's own words
    done = runner.invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert done.exit_code == 0, done.stderr
    rows = [json.loads(line) for line in (tmp_path / "run/responses.jsonl").read_text().splitlines()]
    echoed = [r for r in rows if r["backend"] == "echo"]
    assert echoed and all(r["text"].startswith("I AM ASTER") for r in echoed)  # its option arrived
    assert {r["model"] for r in echoed} == {"echo-1"}  # its default model, read off the class
    judged = [json.loads(line) for line in (tmp_path / "run/judgements.jsonl").read_text().splitlines()]
    assert judged and {j["judge"] for j in judged} == {"length"}


def test_what_they_do_not_take_is_refused_from_their_own_constructors(registered, tmp_path):
    base = ["generate", "identities/aster.yaml", "-b", "echo", "--limit", "2", "--dry-run"]
    refused = runner.invoke(app, [*base, "--concurrency", "4"])
    assert refused.exit_code == 1
    assert "concurrency does not apply to the echo backend" in refused.stderr
    assert "pick the backend that takes it: concurrency: openai" in refused.stderr
    judge = runner.invoke(app, [*base, "--judge", "length", "--judge-model", "x"])
    assert judge.exit_code == 1
    assert "error: the options given (--judge-model) do not apply to the 'length' judge" in judge.stderr
    assert "--judge-model configures --judge offline or --judge llm" in judge.stderr
    option = runner.invoke(app, ["generate", "identities/aster.yaml", "-b", "echo", "--limit", "2", "--replay", "0",
                                 "-o", "colour=red", "--out", str(tmp_path / "r")])
    assert option.exit_code == 1 and "backend 'echo' has no option 'colour'" in option.stderr
