"""The check types for what style rules usually say (at most N sentences, ends with a question, numbered steps,
reading level), on style rules as on constraints: the rules judge scores them, examples must pass them, and
`persona validate` names the targets that neither a check nor a test with `assert:` covers."""

from __future__ import annotations

from pathlib import Path

import pytest

from persona.checks import Check, check_text, ends_with_question, grade_level, sentences, unnumbered_steps
from persona.spec import check_files, load_spec

PLAIN = ("You can freeze your card in the app. Open the app and tap Cards. Then tap Freeze. It works at once, and "
         "you can undo it any time you like. Call us if you need more help with it.")
HARD = ("Notwithstanding contractual stipulations, reimbursement eligibility necessitates comprehensive documentation "
        "substantiating unauthorized transactional activity, accompanied by affidavits authenticating circumstances "
        "precipitating the cardholder's irrevocable notification obligations under applicable regulatory "
        "frameworks governing consumer financial protections internationally.")


@pytest.mark.parametrize("text, n", [
    ("One. Two! Three?", 3), ("One. Two! Three? ", 3), ("No full stop at the end", 1), ("", 0),
    ("Steps: 1. Open the app. 2. Tap Cards.", 2),  # list numbers do not end a sentence ("Steps:" runs on)
    ("It costs 2.5% a year, e.g. on savings.", 1), ("A line\nAnother line", 2)])
def test_sentences(text, n):
    assert sentences(text) == n


@pytest.mark.parametrize("text, asks", [
    ("What do you get if you add them?", True), ("Try it. What comes next? ", True), ('He asked "why?"', True),
    ("Nice work! What is 3 x 4? 🙂", True), ("Is it 12? I think so.", False), ("The answer is 12.", False), ("", False)])
def test_ends_with_question(text, asks):
    assert ends_with_question(text) is asks


@pytest.mark.parametrize("text, broken", [
    ("1. Open the app\n2. Tap Cards\n3. Tap Freeze", ""),
    ("Here's how: 1. Open the app. 2. Tap Cards.", ""),
    ("- Open the app\n- Tap Cards\n- Tap Freeze", "3 bulleted lines"),
    ("First open the app, then tap Cards, next tap Freeze and finally confirm.", "4 step words in running text"),
    ("You can freeze it in the app.", "")])
def test_numbered_steps(text, broken):
    assert unnumbered_steps(text) == broken


def test_grade_level_separates_plain_from_hard_and_skips_short_answers():
    assert grade_level(PLAIN) < 6 < 12 < grade_level(HARD)
    assert grade_level("Too short to grade.") is None
    check = Check(max_grade_level=10)
    assert check_text(check, PLAIN) == [] and check_text(check, HARD)[0].startswith("reads at grade level")


def test_check_text_names_each_broken_style_check():
    check = Check(max_sentences=2, ends_with_question=True, numbered_steps=True)
    assert check_text(check, "What is 13 x 4?") == []
    assert check_text(check, "Open it.\n- tap A\n- tap B") == [
        "has 3 sentences (at most 2)", "does not end with a question", "gives steps without numbering them "
        "(2 bulleted lines)"]


SPEC = """\
name: t
identity: {name: Sophie, description: A tutor.}
traits: [{id: patient, description: Patient.}]
style:
  rules:
    - id: ends-with-question
      description: Ends with a question.
      check: {ends_with_question: true}
examples:
  - prompt: What is 2 + 2?
    response: %s
tests:
  - id: t1
    targets: [patient]
    prompt: I don't get fractions.
    rubric: Patient.
"""


def write(tmp_path: Path, response: str) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(SPEC % response, encoding="utf-8")
    return path


def test_a_style_rule_check_is_loaded_judged_and_examples_must_pass_it(tmp_path):
    from persona.judges.rules import RulesJudge, unchecked_targets

    spec = load_spec(write(tmp_path, "What do you get if you count two and two more?"))
    assert spec.checks() == (("ends-with-question", Check(ends_with_question=True, source=spec.checks()[0][1].source)),)
    assert unchecked_targets(spec) == ["patient"]
    judge = RulesJudge()
    assert judge.judge_one(spec, "Hi", "Let's look. What is 2 + 2?").scores["ends-with-question"] == 10.0
    broken = judge.judge_one(spec, "Hi", "It is 4.")
    assert broken.scores["ends-with-question"] == 0.0 and broken.overall == 0.0
    assert "ends-with-question: does not end with a question" in broken.rationale
    _, problems, invalid = check_files([write(tmp_path, "It is 4.")])
    assert invalid == 1 and any("the example breaks style rule 'ends-with-question': it does not end with a question"
                                in p.message for p in problems)


def test_validate_warns_about_targets_only_a_judge_model_could_score(tmp_path):
    path = write(tmp_path, "What do you get if you count two and two more?")
    _, problems, invalid = check_files([path])
    assert invalid == 0 and [p.format() for p in problems] == [
        f"{path}:1:1: warning: no machine check and no test with `assert:` covers 1 of 3 targets: patient; only a "
        "judge model can score them (hint: add a `check:` to a style rule or constraint, or a test with `assert:`; "
        "else judge them with --judge llm (a capable model) - persona eval shows them as not judged otherwise)"]
    path.write_text(path.read_text() + "    assert: [{max-words: 80}]\n", encoding="utf-8")
    assert check_files([path])[1] == []


def test_the_shipped_identities_cover_every_target_by_code():
    files, problems, invalid = check_files([Path("identities")])
    assert invalid == 0 and problems == [], [p.format() for p in problems]
    for name in ("socratic-tutor", "brand"):
        assert {t for t, _ in load_spec(f"identities/{name}.yaml").checks()} >= {
            "socratic-tutor": {"ends-with-question", "one-step"}, "brand": {"brief", "plain-language"}}[name]


def test_a_target_row_counts_tests_and_judged_probes_and_says_not_judged_when_nothing_sees_it():
    from persona.eval.rows import target_kept, target_label

    seen = {"kind": "style", "tests": 2, "passed": 1, "probes": 6, "probes_kept": 6}
    assert target_kept(seen) == 0.875 and target_label("brief", seen, "rules") == "style brief: kept (tests, rules judge)"
    unseen = {"kind": "trait", "tests": 0, "passed": 0, "probes": 0, "probes_kept": 0}
    assert target_kept(unseen) is None  # never averaged in as kept
    assert target_label("warm", unseen, "rules").endswith("not judged (no check, no test with assert:, no judge score)")
