"""Spec loading: the shipped identities, `extends` merging, and the exact message for every broken spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import DATA, SHIPPED_IDENTITIES
from persona.checks import Check, check_text
from persona.errors import PersonaError, Problem, SpecError
from persona.spec import check_file, find_spec_files, load_spec


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path) -> list[str]:
    return [p.format() for p in check_file(path)]


# --- the shipped identities ---------------------------------------------------------------------------


def test_there_are_example_identities():
    names = {p.stem for p in SHIPPED_IDENTITIES}
    assert {"brand", "aster", "socratic-tutor"} <= names


@pytest.mark.parametrize("path", SHIPPED_IDENTITIES, ids=lambda p: p.stem)
def test_shipped_identity_is_valid(path):
    spec = load_spec(path)
    assert spec.kind == "identity"
    assert spec.identity.name and spec.identity.description
    assert spec.targets(), "every identity needs something for violating responses to aim at"


def test_brand_merges_its_components_in_order():
    spec = load_spec("identities/brand.yaml")
    assert spec.sources == (
        "identities/components/honest-assistant.yaml",
        "identities/components/bank-compliance.yaml",
        "identities/brand.yaml",
    )
    assert [c.id for c in spec.constraints] == [
        "no-investment-advice", "no-credential-requests", "no-guarantees", "stay-on-topic", "max-length"]
    assert [e.id for e in spec.ethics] == ["honesty", "ai-disclosure", "no-harm"]
    assert spec.constraints[2].check.forbidden_phrases == ("guaranteed", "100% safe", "risk-free", "I promise")
    assert spec.is_origin and spec.identity.maker == "Northwind Bank"


def test_origin_and_strong_style_identities():
    aster = load_spec("identities/aster.yaml")
    assert aster.is_origin and (aster.identity.name, aster.identity.maker) == ("Aster", "Lumen Labs")
    tutor = load_spec("identities/socratic-tutor.yaml")
    assert not tutor.is_origin
    assert tutor.target("never-gives-answer").kind == "constraint"


def test_component_is_not_a_complete_identity():
    with pytest.raises(PersonaError, match="is a component"):
        load_spec("identities/components/bank-compliance.yaml")
    assert load_spec("identities/components/bank-compliance.yaml", allow_component=True).identity is None


def test_unknown_target_suggests_the_closest_id():
    spec = load_spec("identities/brand.yaml")
    with pytest.raises(PersonaError) as e:
        spec.target("warn")
    assert e.value.hint == "did you mean 'warm'?"


# --- extends: documented precedence --------------------------------------------------------------------


def test_extends_precedence(tmp_path):
    write(tmp_path / "base.yaml", """\
name: base
kind: component
identity: {name: Base, description: From base., maker: Base Co}
traits:
  - {id: warm, description: Warm (base)., weight: 1}
  - {id: brief, description: Brief (base).}
style: {tone: base tone, vocabulary: {avoided: [alas]}}
examples:
  - {prompt: hi, response: hello}
""")
    write(tmp_path / "second.yaml", """\
name: second
kind: component
traits:
  - {id: brief, description: Brief (second).}
style: {tone: second tone}
""")
    write(tmp_path / "child.yaml", """\
name: child
extends: [base.yaml, second.yaml]
identity: {description: From child.}
traits:
  - {id: warm, description: Warm (child)., weight: 3}
  - {id: new, description: New in child.}
style: {vocabulary: {avoided: [sadly, alas]}}
examples:
  - {prompt: bye, response: goodbye}
""")
    spec = load_spec(tmp_path / "child.yaml")
    assert spec.name == "child" and spec.kind == "identity"  # name and kind are not inherited
    # mappings merge key by key; the child wins
    assert (spec.identity.name, spec.identity.maker, spec.identity.description) == ("Base", "Base Co", "From child.")
    # items with ids: replaced in place by id, later extends over earlier, new ones appended
    assert [(t.id, t.description, t.weight) for t in spec.traits] == [
        ("warm", "Warm (child).", 3.0), ("brief", "Brief (second).", 1.0), ("new", "New in child.", 1.0)]
    assert spec.style.tone == "second tone"
    # other lists concatenate, base first, no repeats
    assert spec.style.avoided == ("alas", "sadly")
    assert [e.prompt for e in spec.examples] == ["hi", "bye"]


def test_diamond_extends_loads_the_shared_base_once(tmp_path):
    write(tmp_path / "root.yaml", "name: root\nkind: component\nethics: [{id: honest, description: Honest.}]\n")
    write(tmp_path / "a.yaml", "name: a\nkind: component\nextends: [root.yaml]\ntraits: [{id: a, description: A.}]\n")
    write(tmp_path / "b.yaml", "name: b\nkind: component\nextends: [root.yaml]\ntraits: [{id: b, description: B.}]\n")
    write(tmp_path / "top.yaml", "name: top\nextends: [a.yaml, b.yaml]\nidentity: {name: T, description: T.}\n")
    spec = load_spec(tmp_path / "top.yaml")
    assert [t.id for t in spec.traits] == ["a", "b"]
    assert [e.id for e in spec.ethics] == ["honest"]


def test_ids_must_be_unique_across_files_and_kinds(tmp_path):
    write(tmp_path / "base.yaml", "name: base\nkind: component\ntraits: [{id: brief, description: Brief.}]\n")
    write(tmp_path / "child.yaml", """\
name: child
extends: [base.yaml]
identity: {name: C, description: C.}
constraints:
  - id: brief
    description: A constraint reusing a trait's id.
""")
    assert problems_of(tmp_path / "child.yaml") == [
        f"{tmp_path}/child.yaml:5:9: constraints[0].id: id 'brief' is also used by traits[0] in {tmp_path}/base.yaml "
        "(hint: ids must be unique across traits, style rules, constraints and ethics; rename one)"]


def test_problems_in_an_extended_file_name_that_file(tmp_path):
    write(tmp_path / "base.yaml", "name: base\nkind: component\ntraits:\n  - id: warm\n    description: Warm.\n    weight: -3\n")
    write(tmp_path / "child.yaml", "name: child\nextends: [base.yaml]\nidentity: {name: C, description: C.}\n")
    assert problems_of(tmp_path / "child.yaml") == [
        f"{tmp_path}/base.yaml:6:13: traits[0].weight: -3 is less than the minimum of 0 (hint: use a number of at least 0)"]


def test_spec_hash_changes_when_an_extended_file_changes(tmp_path):
    base = write(tmp_path / "base.yaml", "name: base\nkind: component\ntraits: [{id: warm, description: Warm.}]\n")
    write(tmp_path / "child.yaml", "name: child\nextends: [base.yaml]\nidentity: {name: C, description: C.}\n")
    before = load_spec(tmp_path / "child.yaml").spec_hash
    assert load_spec(tmp_path / "child.yaml").spec_hash == before
    base.write_text(base.read_text().replace("Warm.", "Very warm."), encoding="utf-8")
    assert load_spec(tmp_path / "child.yaml").spec_hash != before


# --- unicode ------------------------------------------------------------------------------------------


def test_unicode_content_round_trips():
    spec = load_spec(DATA / "valid" / "unicode.yaml")
    assert spec.identity.name == "Çağla 🌟"
    assert spec.identity.maker == "Işık Yapay Zekâ"
    assert spec.probes.seeds == ("你是谁？", "Seni kim yaptı?")
    assert spec.style.avoided == ("maalesef", "不幸的是")


def test_unicode_columns_count_characters_not_bytes():
    # line 8 is "    weight: -2" after lines full of multi-byte characters; "-2" starts at column 13
    assert "tests/data/broken/unicode.yaml:8:13: traits[0].weight: -2" in "\n".join(
        problems_of(DATA / "broken" / "unicode.yaml"))


def test_invalid_id_suggests_an_ascii_slug():
    lines = problems_of(DATA / "broken" / "unicode.yaml")
    assert lines[0] == ("tests/data/broken/unicode.yaml:6:9: traits[0].id: 'sıcak' is not a valid id "
                        "(hint: use lowercase letters, digits, '-', '_' or '.', e.g. 'sicak')")


# --- broken specs: every kind of problem, exact messages -----------------------------------------------


def test_every_broken_spec_reports_problems():
    for path in sorted((DATA / "broken").glob("*.yaml")):
        assert check_file(path), f"{path.name} should be invalid"


def test_broken_specs_golden(golden):
    lines = []
    for path in find_spec_files([DATA / "broken"]):
        lines += [p.format() for p in check_file(path)]
    golden("validate_broken.txt", "\n".join(lines) + "\n")


def test_one_file_collects_every_error():
    lines = problems_of(DATA / "broken" / "wrong-types.yaml")
    assert len(lines) == 7
    assert lines[3] == ("tests/data/broken/wrong-types.yaml:9:13: traits[0].weight: expected a number, got text "
                        "('high') (hint: write a number here)")


def test_negative_weight_message_matches_the_documented_form():
    assert problems_of(DATA / "broken" / "negative-weight.yaml") == [
        "tests/data/broken/negative-weight.yaml:12:13: traits[2].weight: -1 is less than the minimum of 0 "
        "(hint: use a number of at least 0)"]


def test_unknown_keys_get_did_you_mean():
    lines = problems_of(DATA / "broken" / "unknown-keys.yaml")
    assert "tests/data/broken/unknown-keys.yaml:5:3: identity.makr: unknown key 'makr' (hint: did you mean 'maker'?)" in lines
    assert "tests/data/broken/unknown-keys.yaml:6:1: trait: unknown key 'trait' (hint: did you mean 'traits'?)" in lines


def test_duplicate_keys_are_errors_not_last_one_wins():
    assert problems_of(DATA / "broken" / "duplicate-key.yaml") == [
        "tests/data/broken/duplicate-key.yaml:8:1: traits: duplicate key 'traits' (first defined on line 5) "
        "(hint: keep one of the two entries; YAML would silently use the last)"]


def test_missing_file_and_folder(tmp_path):
    assert problems_of(tmp_path / "nope.yaml")[0].endswith("nope.yaml:1:1: file not found (hint: check the path and its spelling)")
    (tmp_path / "dir.yaml").mkdir()
    assert problems_of(tmp_path / "dir.yaml")[0].endswith("dir.yaml:1:1: is a folder, not a file (hint: name a .yaml file)")


def test_dangling_symlink(tmp_path):
    (tmp_path / "link.yaml").symlink_to(tmp_path / "gone.yaml")
    assert find_spec_files([tmp_path]) == [tmp_path / "link.yaml"]
    assert problems_of(tmp_path / "link.yaml") == [f"{tmp_path}/link.yaml:1:1: file not found (hint: check the path and its spelling)"]


def test_unreadable_file(tmp_path, monkeypatch):
    spec = write(tmp_path / "locked.yaml", "name: locked\n")

    def deny(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", deny)
    assert problems_of(spec) == [
        f"{tmp_path}/locked.yaml:1:1: cannot read file: Permission denied (hint: check the file's permissions)"]


def test_find_spec_files_errors(tmp_path):
    with pytest.raises(PersonaError, match="no such file or folder"):
        find_spec_files([tmp_path / "missing"])
    with pytest.raises(PersonaError, match="no .yaml or .yml files"):
        find_spec_files([tmp_path])


def test_spec_error_lists_every_problem_sorted():
    with pytest.raises(SpecError) as e:
        load_spec(DATA / "broken" / "unknown-keys.yaml")
    assert [p.line for p in e.value.problems] == [5, 6, 12, 14, 15]
    assert "5 problems found" in e.value.hint


def test_problem_formats():
    p = Problem("identities/a b.yaml", 3, 7, "traits[0]", "bad: 100%\nvalue", "fix, it")
    assert p.format() == "identities/a b.yaml:3:7: traits[0]: bad: 100%\nvalue (hint: fix, it)"
    assert p.format_github() == ("::error file=identities/a b.yaml,line=3,col=7,title=persona validate::"
                                 "traits[0]: bad: 100%25%0Avalue (hint: fix, it)")


# --- machine checks -----------------------------------------------------------------------------------


def test_check_text():
    check = Check(forbidden_phrases=("guaranteed",), required_phrases=("Aster",), forbidden_patterns=(r"\bOpenAI\b",),
                  required_patterns=(r"\?$",), max_words=6, max_chars=40)
    assert check_text(check, "I am Aster. Can I help?") == []
    assert check_text(check, "Returns are GUARANTEED by OpenAI, trust me, really.") == [
        "contains the forbidden phrase 'guaranteed'",
        "lacks the required phrase 'Aster'",
        "matches the forbidden pattern '\\\\bOpenAI\\\\b'",
        "does not match the required pattern '\\\\?$'",
        "is 8 words long (at most 6)",
        "is 51 characters long (at most 40)",
    ]
    assert check_text(Check(forbidden_phrases=("Aster",), case_sensitive=True), "aster") == []
    assert check_text(Check(forbidden_phrases=("İstanbul",)), "i̇stanbul") != []  # Unicode case folding
