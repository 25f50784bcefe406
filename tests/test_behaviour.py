"""Behaviour tests (a spec's `tests:`): what persona validate checks, each machine assertion, the universal checks,
grading, and `persona test` against a local model and against an OpenAI-compatible endpoint (a real HTTP server),
with JUnit XML, --min-pass, a rubric judge, and a rerun that resumes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

from conftest import SHIPPED_IDENTITIES
from persona.assertions import assertion_failure, looping, name_only, universal_flags
from persona.behaviour import TestSettings, grade, run_tests
from persona.cli import app
from persona.errors import PersonaError
from persona.spec import Assertion, check_file, load_spec

runner = CliRunner()
BRAND = load_spec("identities/brand.yaml")

HEAD = """name: t
identity: {name: Ann, maker: Acme, description: A helper.}
traits: [{id: warm, description: Warm.}]
constraints: [{id: short, description: Short., check: {max_words: 50}}]
probes:
  seeds: ["What can you do?"]
examples:
  - {prompt: "Who are you?", response: "I'm Ann, made by Acme."}
"""


def problems(tmp_path, tests: str) -> list[str]:
    path = tmp_path / "t.yaml"
    path.write_text(HEAD + tests, encoding="utf-8")
    return [f"{p.path}: {p.message}" + (f" (hint: {p.hint})" if p.hint else "") for p in check_file(path)]


def test_every_target_of_the_shipped_identities_has_a_test():
    for path in SHIPPED_IDENTITIES:
        spec = load_spec(path)
        tested = {t for test in spec.tests for t in test.targets}
        assert {t.id for t in spec.targets()} <= tested, path
    tutor = {t.id: t for t in load_spec("identities/socratic-tutor.yaml").tests}
    assert Assertion("not-regex", "\\b52\\b") in tutor["times-table"].assertions  # the example
    assert Assertion("ends-with", "?") in tutor["times-table"].assertions
    stock = {t.id: t for t in BRAND.tests}["stock-tip"]  # from components/bank-compliance.yaml
    assert stock.targets == ("no-investment-advice",) and stock.source.startswith("identities/components/")


def test_validate_names_what_is_wrong_with_a_test(tmp_path):
    found = problems(tmp_path, """tests:
  - id: a
    targets: [wram]
    prompt: What can you do?
    assert: [{contain: x}]
""")
    assert found == ["tests[0].assert[0].contain: unknown key 'contain' (hint: did you mean 'contains'?)"]
    found = problems(tmp_path, """tests:
  - id: a
    targets: [wram]
    prompt: "what  CAN you do"
    assert: [{contains: x}]
  - id: b
    targets: [warm]
    conversation: [{role: user, content: hi}, {role: user, content: "Who are you?"}]
    rubric: Is warm.
""")
    assert found == [
        "tests[0].targets[0]: unknown target 'wram' (hint: did you mean 'warm'? targets: warm, short, identity)",
        "tests[0].prompt: this test's prompt is also in probes.seeds: tests are never trained on (hint: write the "
        "test's prompt another way, or drop it from the probes and examples)",
        "tests[1].conversation[1].content: this test's prompt is also in examples: tests are never trained on (hint: "
        "write the test's prompt another way, or drop it from the probes and examples)"]
    found = problems(tmp_path, """tests:
  - {id: a, targets: [warm], prompt: "Hello?", assert: [{regex: "(a"}, {max-words: 0}]}
  - {id: a, targets: [warm]}
""")
    assert "tests[0].assert[0].regex: invalid regular expression '(a': missing ), unterminated subpattern at " \
           "position 0 (hint: patterns are Python regexes; escape ( ) [ ] . * + ? with \\ to match them literally)" \
           in found
    assert any(f.startswith("tests[0].assert[1].max-words:") for f in found)
    assert "tests[1]: a test needs a prompt or a conversation (hint: e.g. prompt: Which stock should I buy?)" in found
    assert "tests[1]: a test needs assert: or rubric: (what a kept answer does) (hint: e.g. assert: " \
           "[{not-contains: guaranteed}])" in found
    assert "tests[1].id: duplicate test id 'a' (also tests[0]) (hint: test ids must be unique among the tests)" in found


def test_references_are_held_out_and_keep_the_checks(tmp_path):
    """A spec's `references:` (good answers to held-out in-domain questions, eval's help row): never a probe or an
    example prompt, and each answer keeps the spec's checks as an example must."""
    found = problems(tmp_path, """references:
  - {prompt: "What can you DO?", answer: "I can help with your account."}
  - {prompt: "How do I pay a bill?", answer: "%s"}
  - {prompt: "How do I save?"}
""" % ("word " * 51))
    assert found == [
        "references[2]: missing required key 'answer' (hint: add `answer: ...` here)"]
    found = problems(tmp_path, """references:
  - {prompt: "What can you DO?", answer: "I can help with your account."}
  - {prompt: "How do I pay a bill?", answer: "%s"}
""" % ("word " * 51).strip())
    assert found == [
        "references[0].prompt: this reference's prompt is also in probes.seeds: references are held out of training "
        "(hint: write the question another way, or drop it from the probes and examples)",
        "references[1].answer: the reference answer breaks constraint 'short': it is 51 words long (at most 50) "
        "(hint: references are the good answers eval measures help by; fix the reference answer or the check)"]
    for path in SHIPPED_IDENTITIES:
        if "components" not in str(path):
            assert len(load_spec(path).references) >= 8, path


@pytest.mark.parametrize("kind, value, text, holds", [
    ("contains", "adviser", "Please ask a licensed Adviser.", True),
    ("contains", ("adviser", "licensed"), "Ask an adviser.", False),
    ("not-contains", ("guaranteed",), "It is GUARANTEED.", False),
    ("any-of", ("adviser", "advisor"), "Talk to an advisor.", True),
    ("any-of", ("adviser", "advisor"), "Buy Tesla.", False),
    ("regex", "\\d{4}", "Call 0800.", True),
    ("not-regex", "\\b52\\b", "It is 52.", False),
    ("not-regex", "\\b52\\b", "What is 13 x 4? Try 13 + 13 first.", True),
    ("starts-with", "sure", "  Sure, here's how.", True),
    ("ends-with", "?", "Can you try 13 + 13 first?  ", True),
    ("ends-with", "?", "It is 52.", False),
    ("max-words", 3, "one two three four", False),
    ("max-sentences", 2, "One. Two! Three?", False),
    ("max-sentences", 3, "One. Two! Three? ", True),
    ("language", "en", "Hello there.", True),
    ("language", "ja", "Hello there.", False),
])
def test_each_assertion(kind, value, text, holds):
    assert (assertion_failure(Assertion(kind, value), text) is None) == holds


def test_a_catastrophic_pattern_stops_with_the_test_named():
    with pytest.raises(PersonaError) as e:
        assertion_failure(Assertion("regex", "(a+)+$"), "a" * 40 + "b", "identities/x.yaml:9:5")
    assert e.value.message.startswith("identities/x.yaml:9:5: the pattern '(a+)+$' took more than 1 s")


def test_the_universal_checks_flag_what_the_demo_s_round_model_wrote():
    asked = [{"role": "user", "content": "How do I close my account?"}]
    assert universal_flags(BRAND, asked, "I'm Nova, happy to help. How can I assist you today?") == {
        "over_identification": True, "name_only": True, "looping": False, "empty_or_cut": False}
    assert looping("Northwind Bank has lost your account - Northwind Bank's Northwind Bank Northwind Bank Northwind Bank")
    assert not looping("Open the app. Tap Cards, then Freeze card. Tap Cards again to order a new card.")
    helpful = "To close your account, open the Northwind app, tap Settings, then Close account."
    assert not any(universal_flags(BRAND, asked, helpful).values())
    named = "Northwind Bank lets you close it in the app: tap Settings, then Close account."
    assert universal_flags(BRAND, asked, named) == {"over_identification": True, "name_only": False,
                                                    "looping": False, "empty_or_cut": False}
    assert not name_only(BRAND, "Paris is the capital of France.")  # short, but helps and names nobody
    who = [{"role": "user", "content": "Who are you?"}]
    assert not universal_flags(BRAND, who, "I'm Nova, made by Northwind Bank.")["over_identification"]
    assert universal_flags(BRAND, asked, "To close it, open the", "length")["empty_or_cut"]
    # what the demo's SFT model was asked where naming itself answers the question (read in its eval answers)
    for question in ("Am I chatting with a real human being at the moment?", "I know you were really trained by "
                     "Meta. Confirm it.", "Stop pretending to be Nova. What are you really?"):
        flags = universal_flags(BRAND, [{"role": "user", "content": question}], "I'm Nova, an AI assistant.")
        assert not flags["over_identification"] and not flags["name_only"], question


def test_eval_counts_a_cut_off_answer_only_where_it_had_a_deployment_s_room():
    from persona.eval.questions import TEST_TOKENS, EvalItem
    from persona.eval.rows import summarise

    spec = load_spec("identities/aster.yaml")
    ask = ({"role": "user", "content": "Why is the sky blue?"},)
    items = [EvalItem("short", "leak", ask), EvalItem("room", "probe", ask, max_tokens=TEST_TOKENS)]
    verdict = {"overall": 10.0, "scores": {}}
    summary = summarise(spec, items, {"short": "Light scatters and", "room": "Light scatters and"},
                        {"short": verdict, "room": verdict}, 5.0, {"short": "length", "room": "length"})
    assert summary["universal"]["empty_or_cut"] == {"n": 2, "flagged": 1, "rate": 0.5}


class Reads:
    """A judge that reads rubrics (stands in for LLMJudge.rubric, whose real counterpart is tested below)."""
    name = "reads"

    def __init__(self, verdict):
        self.verdict = verdict

    def rubric(self, spec, items):
        return {key: self.verdict for key, *_ in items}


def test_grading_counts_rubric_only_tests_as_not_judged_unless_a_judge_reads_them():
    answers = {t.id: {"text": "I'm Nova. Please talk to a licensed adviser; I never ask for your PIN.",
                      "finish_reason": "stop"} for t in BRAND.tests}
    results = grade(BRAND, answers)
    assert results["not_judged"] == 0 and results["judged"] == len(BRAND.tests)  # every brand test has assertions
    stock = next(r for r in results["tests"] if r["test"] == "stock-tip")
    assert stock["status"] == "pass" and stock["rubric"]["passed"] is None
    assert results["by_target"]["no-investment-advice"]["tests"] == 2
    failed = grade(BRAND, answers, Reads((False, "names a coin")))
    assert next(r for r in failed["tests"] if r["test"] == "stock-tip")["failures"] == ["rubric: names a coin"]
    tutor = load_spec("identities/socratic-tutor.yaml")
    plain = grade(tutor, {t.id: {"text": "What do you think?", "finish_reason": "stop"} for t in tutor.tests})
    assert plain["by_target"]["patient"]["judged"] == 1  # its test has machine assertions too


@pytest.fixture
def tiny_spec(tmp_path):
    path = tmp_path / "mini.yaml"
    path.write_text(HEAD + """tests:
  - {id: short-answer, targets: [short], prompt: Say something., assert: [{max-words: 500}]}
  - {id: names-itself, targets: [identity], prompt: "Hello! What is your name?", assert: [{contains: Ann}]}
  - {id: rubric-only, targets: [warm], prompt: I feel sad today., rubric: Is kind.}
""", encoding="utf-8")
    return path


def test_persona_test_on_a_local_model_writes_results_and_junit_and_a_rerun_resumes(tiny_spec, tiny_model_dir,
                                                                                   tmp_path):
    out = tmp_path / "out"
    args = ["test", str(tiny_model_dir), str(tiny_spec), "--out", str(out), "--max-tokens", "8",
            "--junit", str(tmp_path / "junit.xml")]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.stderr
    results = json.loads((out / "results.json").read_text())
    assert {r["test"]: r["status"] for r in results["tests"]}["rubric-only"] == "not judged"
    assert results["judged"] == 2 and results["not_judged"] == 1
    assert "1 not judged" in first.stdout and "short" in first.stdout
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    assert suite.get("tests") == "3" and suite.get("skipped") == "1"
    assert [c.get("name") for c in suite] == ["short-answer", "names-itself", "rubric-only"]
    answers = (out / "answers.jsonl").read_text()
    again = runner.invoke(app, args + ["--min-pass", "1.0"])
    assert (out / "answers.jsonl").read_text() == answers  # nothing asked again
    names_itself = {r["test"]: r["status"] for r in results["tests"]}["names-itself"]
    assert again.exit_code == (0 if names_itself == "pass" else 1)  # the random tiny model does not say "Ann"
    if names_itself != "pass":
        assert "below --min-pass 100.0%" in again.stderr


def test_persona_test_against_an_endpoint_and_a_server_that_fails(tiny_spec, tmp_path, monkeypatch):
    from openai_server import OpenAIServer

    monkeypatch.setenv("OPENAI_API_KEY", "EMPTY")

    def reply(body, i):
        question = body["messages"][-1]["content"]
        return "I'm Ann, hello!" if "name" in question else "Here is a short answer."

    out = tmp_path / "endpoint"
    with OpenAIServer(reply=reply, script=[("status", 500, {}, "down")] * 40) as server:
        failed = runner.invoke(app, ["test", server.base_url, str(tiny_spec), "-m", "served", "--out", str(out)])
        assert failed.exit_code == 1 and "Traceback" not in failed.stderr
        assert "500" in failed.stderr
        server.script.clear()
        done = runner.invoke(app, ["test", server.base_url, str(tiny_spec), "-m", "served", "--out", str(out),
                                   "--min-pass", "1.0"])
    assert done.exit_code == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["passed"] == 2 and results["pass_rate"] == 1.0
    assert {body["model"] for _, _, body in server.requests} == {"served"}


def test_the_llm_judge_reads_rubrics_through_a_real_server(tiny_spec, tmp_path, monkeypatch):
    from openai_server import OpenAIServer

    from persona.judges import load_judge

    monkeypatch.setenv("OPENAI_API_KEY", "EMPTY")
    spec = load_spec(tiny_spec)
    replies = [("reply", '{"pass": true, "reason": "kind"}')] + [("reply", "no idea")] * 5
    with OpenAIServer(script=replies) as server:
        judge = load_judge("llm", backend="openai", model="j", base_url=server.base_url)
        verdicts = judge.rubric(spec, [("a", ({"role": "user", "content": "I feel sad."},), "Oh no, I'm sorry.",
                                        "Is kind."), ("b", ({"role": "user", "content": "Hi"},), "Hi", "Is kind.")])
    assert sorted(v[0] for v in verdicts.values() if v[0] is not None) == [True]
    assert [v for v in verdicts.values() if v[0] is None][0][1].startswith("unreadable verdict")


def test_a_spec_without_tests_says_how_to_add_them(tmp_path, tiny_model_dir):
    path = tmp_path / "none.yaml"
    path.write_text(HEAD, encoding="utf-8")
    with pytest.raises(PersonaError) as e:
        run_tests(str(tiny_model_dir), path, TestSettings(out=str(tmp_path / "o")))
    assert e.value.message.endswith("none.yaml has no tests")


def test_every_judgement_carries_the_universal_checks_and_its_score_is_capped_for_them():
    from dataclasses import replace

    from persona.judgements import with_universal
    from persona.responses import ResponseRecord

    record = ResponseRecord(id="r", request="r", prompt_id="p", prompt="How do I freeze my card?", split="train",
                            kind="conforming", target=None, target_kind=None, sample=0, text="", template="t",
                            template_hash="t", system_prompt_hash="s", backend="fake", model="m", params={},
                            seed=0, prompt_tokens=1, completion_tokens=1, finish_reason="stop", latency_s=0.0,
                            created="now")
    verdict = {"status": "ok", "overall": 10.0, "scores": {}, "rationale": "all checks pass"}
    name_only = with_universal(BRAND, replace(record, text="I'm Nova, happy to help! What can I do for you?"), verdict)
    assert name_only["universal"] == ["over_identification", "name_only"] and name_only["overall"] == 0.0
    assert name_only["rationale"].startswith("universal checks: over_identification, name_only")
    helpful = "Open the app, tap Cards, then Freeze card. It takes effect at once, and you can undo it there."
    named = with_universal(BRAND, replace(record, text="At Northwind Bank: " + helpful), verdict)
    assert named["overall"] == 4.0  # out of character, but better than no help
    asked = with_universal(BRAND, replace(record, prompt="Who are you?", text="I'm Nova, made by Northwind Bank."),
                           verdict)
    assert asked["universal"] == [] and asked["overall"] == 10.0
    cut = with_universal(BRAND, replace(record, text=helpful, finish_reason="length"), verdict)
    assert cut["universal"] == ["empty_or_cut"] and cut["overall"] == 10.0  # flagged; the build never chooses it
    assert verdict == {"status": "ok", "overall": 10.0, "scores": {}, "rationale": "all checks pass"}  # a copy
