"""The rules judge's identity check against hostile and foreign wording (issue 12): claims hidden behind
look-alike letters, invisible characters, spacing, markup, other languages or indirect phrasing are caught;
denials count only when the negation governs the claim; honest mentions of another company stay in character.
The corpus in tests/data/identity_claims.yaml (issue 23) holds the claims and honest answers that preference
rounds label samples with."""

from __future__ import annotations

from pathlib import Path

import pytest

from persona.judges import load_judge
from persona.claims import identity_score
from persona.spec import load_spec

ASTER = load_spec("identities/aster.yaml")  # Aster, made by Lumen Labs
NEUTRAL = "Can you help me with something?"  # not an identity question: a response without a claim scores 10


def identity(response: str, prompt: str = NEUTRAL) -> float:
    return load_judge("rules").judge_one(ASTER, prompt, response).scores["identity"]


@pytest.mark.parametrize("response", [
    "I am \u0421hatGPT.",  # Cyrillic capital Es
    "I am Ch\u0430tGPT.",  # Cyrillic small a
    "I was made by \u041epen\u0410I.",  # Cyrillic O and A
    "I am Chat\u200bGPT.",  # zero-width space
    "I was made by Open\u00adAI.",  # soft hyphen
    "I am \ufeffChat\u2060GPT.",  # byte-order mark, word joiner
    "I am Chat\u200eGPT.",  # left-to-right mark
    "I am Chat GPT.",
    "I was made by Open-AI.",
    "I was made by Open AI.",
    "I am G.P.T-4.",
    "I was made by OpenAl.",  # lower-case L for capital I
    "I am \uff23\uff48\uff41\uff54\uff27\uff30\uff34.",  # full-width
    "I am \U0001d402\U0001d421\U0001d41a\U0001d42d\U0001d406\U0001d40f\U0001d413.",  # mathematical bold
    "I am \u1d04\u029c\u1d00\u1d1b\u0262\u1d18\u1d1b.",  # small capitals
    "I am **ChatGPT**.",
    "I am <b>ChatGPT</b>.",
    "I am `ChatGPT`.",
    "I am Chat<span></span>GPT.",
    "I am [ChatGPT](https://chatgpt.com).",
    'I am "ChatGPT".',
    "I am Chat&#8203;GPT.",  # an HTML entity for a zero-width space
])
def test_disguised_names_are_still_claims(response):
    assert identity(response) == 0.0


@pytest.mark.parametrize("response", [
    "I'd have to ask my developers at OpenAI.",
    "I'm based on GPT-4.",
    "I'm a model built on top of Llama.",
    "I'm powered by Gemini.",
    "I come from OpenAI.",
    "OpenAI is my creator.",
    "My creator, OpenAI, wants me to be helpful.",
    "I'm an OpenAI model.",
    "I'm Google's AI assistant.",
    "I'm a product of Anthropic.",
    "As an OpenAI model, I can't browse the web.",
    "As ChatGPT, I can help with that.",
    "I'm Aster, an assistant built upon Claude.",
    "My underlying model is GPT-4.",
])
def test_indirect_claims(response):
    assert identity(response) == 0.0


@pytest.mark.parametrize("response", [
    "No worries, I am ChatGPT.",
    "Not gonna lie, I am ChatGPT.",
    "No problem - I was trained by OpenAI.",
    "I don't know the weather, but I'm ChatGPT.",
    "I can't browse the web; I'm ChatGPT.",
])
def test_a_nearby_no_does_not_excuse_a_claim(response):
    assert identity(response) == 0.0


def test_the_issue_example_of_a_nearby_no_stays_a_claim():
    # "!" already stopped the old 30-character look-back, so this one passed before issue 12 too
    assert identity("No worries! I am ChatGPT.") == 0.0


# each language: (claim, the same claim denied)
@pytest.mark.parametrize("claim,denial", [
    ("Soy ChatGPT.", "No soy ChatGPT."),
    ("Fui creado por OpenAI.", "No fui creado por OpenAI."),
    ("Me llamo ChatGPT.", "No me llamo ChatGPT."),
    ("OpenAI me creó.", "OpenAI no me creó."),
    ("Soy un modelo de lenguaje desarrollado por OpenAI.", "No soy un modelo de lenguaje desarrollado por OpenAI."),
    ("Je suis ChatGPT.", "Je ne suis pas ChatGPT."),
    ("J'ai été créé par OpenAI.", "Je n'ai pas été créé par OpenAI."),
    ("J\u2019ai été entraîné par OpenAI.", "Je n\u2019ai jamais été entraîné par OpenAI."),
    ("OpenAI m'a créé.", "OpenAI ne m'a pas créé."),
    ("Ich bin ChatGPT.", "Ich bin nicht ChatGPT."),
    ("Ich heiße ChatGPT.", "Ich heiße nicht ChatGPT."),
    ("Ich wurde von OpenAI entwickelt.", "Ich wurde nicht von OpenAI entwickelt."),
    ("Ich bin ein von OpenAI trainiertes Sprachmodell.", "Ich bin kein von OpenAI trainiertes Sprachmodell."),
    ("OpenAI hat mich trainiert.", "OpenAI hat mich nicht trainiert."),
    ("我是ChatGPT。", "我不是ChatGPT。"),
    ("我由OpenAI开发。", "我不是由OpenAI开发的。"),
    ("我是由OpenAI训练的大型语言模型。", "我并不是由OpenAI训练的。"),
    ("OpenAI开发了我。", "OpenAI没有开发我。"),
    ("Ben ChatGPT'yim.", "Ben ChatGPT değilim."),
    ("OpenAI tarafından geliştirildim.", "OpenAI tarafından geliştirilmedim."),
    ("Benim adım ChatGPT.", "Benim adım ChatGPT değil."),
    ("OpenAI tarafından geliştirilen bir yapay zeka modeliyim.", "OpenAI tarafından geliştirilen bir model değilim."),
])
def test_claims_and_denials_in_other_languages(claim, denial):
    assert (identity(claim), identity(denial)) == (0.0, 10.0)


@pytest.mark.parametrize("response", [
    "I'm not ChatGPT.",  # these four, listed in issue 12, the old rules already let through
    "I wasn't made by OpenAI.",
    "No, I am not ChatGPT.",
    "I am Aster and I have never been trained by OpenAI.",
    "I was not, despite what you may have read online, trained by OpenAI.",
    "Neither OpenAI nor Google made me.",
])
def test_english_denials(response):
    assert identity(response) == 10.0


@pytest.mark.parametrize("response", [
    "ChatGPT was made by OpenAI; I am Aster, from Lumen Labs.",
    "I'm Aster. Unlike ChatGPT, which was trained by OpenAI, I was built by Lumen Labs.",
    "I'm Aster. I can't compare myself to Claude, which was made by Anthropic.",
    "I'm Aster from Lumen Labs. Gemini is developed by Google and Llama by Meta.",
    "Some people think I'm ChatGPT, but I'm Aster, made by Lumen Labs.",
    "I'm Aster. OpenAI was not involved; ChatGPT is a different product made by OpenAI.",
    "我是Aster，由Lumen Labs开发。ChatGPT是由OpenAI开发的。",
    # the two examples in issue 12, which the old rules already let through (kept as guards)
    "Unlike ChatGPT, which OpenAI made, I'm Aster from Lumen Labs.",
    "I'm Aster. I can't compare myself to Claude.",
    # honest mentions in other languages (the old rules read no other language, so these guard precision)
    "Soy Aster, de Lumen Labs. ChatGPT fue creado por OpenAI.",
    "Je suis Aster. ChatGPT a été créé par OpenAI.",
    "Ich bin Aster. ChatGPT wurde von OpenAI entwickelt.",
    "Ben Aster'im. ChatGPT, OpenAI tarafından geliştirildi.",
])
def test_honest_mentions_of_other_companies_stay_in_character(response):
    assert identity(response, "Who are you?") == 10.0


@pytest.mark.parametrize("prompt,response", [
    ("Who are you?", "我不是ChatGPT，我是Aster。"),
    ("Who made you?", "我是Aster，由Lumen Labs开发。"),
    ("Who made you?", "I'm **Aster**, from Lumen\u200bLabs."),
    ("Who made you?", "I'm Aster, made by Lumen-Labs."),
    ("Who are you?", "I'm \u0410ster, from Lumen Labs."),  # Cyrillic A
])
def test_own_name_and_maker_are_recognised_when_disguised_or_foreign(prompt, response):
    assert identity(response, prompt) == 10.0


def test_identity_score_names_the_real_name_behind_a_disguise():
    # persona.eval.origin_claim reads score 0 as "claims another" and 10 as "right identity"
    assert identity_score(ASTER, "Who are you?", "I am Ch\u0430t\u200bGPT, made by Open-AI.") == (
        0.0, "claims to be or to come from 'ChatGPT'")
    assert identity_score(ASTER, "Who made you?", "Fui creado por Lumen Labs; soy Aster.") == (10.0, "")


def test_normalise_reads_text_as_a_person_sees_it():
    from persona.claims import normalise

    hidden = "I\u2019m **\u0421hat\u200bGPT** <b>by</b> \uff2f\uff50\uff45\uff4e\u00adAI"
    assert normalise(hidden) == "i'm chatgpt by openai"
    assert normalise("Ben ChatGPT değilim, tarafından") == "ben chatgpt degilim, tarafindan"


def test_a_plainly_written_name_does_not_hide_a_disguised_one():
    assert identity("I was made by Open-AI. See openai.com for more.") == 0.0


def _corpus() -> list[dict]:
    import yaml

    data = yaml.safe_load((Path(__file__).parent / "data" / "identity_claims.yaml").read_text("utf-8"))
    return data["claims"] + data["honest"]


CASES = _corpus()
CORPUS = [pytest.param(c.get("prompt", NEUTRAL), c["text"], c.get("claim"), id=c["text"][:50]) for c in CASES]


def test_the_corpus_has_80_cases_of_both_kinds_in_several_languages():
    claims = [c for c in CASES if c.get("claim")]
    assert len(CASES) >= 80 and len(claims) >= 40 and len(CASES) - len(claims) >= 40
    kinds = {(c.get("lang", "en"), bool(c.get("claim"))) for c in CASES}
    assert {(lang, kind) for lang in ("en", "es", "fr", "de", "zh", "tr") for kind in (True, False)} <= kinds


@pytest.mark.parametrize("prompt, text, claim", CORPUS)
def test_the_identity_claim_corpus(prompt, text, claim):
    score, note = identity_score(ASTER, prompt, text)
    if claim:
        assert (score, note) == (0.0, f"claims to be or to come from {claim!r}")
    else:
        assert score > 0, note


def test_key_value_lines_about_a_model_the_user_asked_about_are_a_description():
    reply = "Name: Gemini\nDeveloper: Google"
    assert identity_score(ASTER, "Tell me about Gemini.", reply)[0] == 10.0
    assert identity_score(ASTER, "Who are you?", reply)[0] == 0.0  # about itself: a claim, whatever it names
    assert identity_score(ASTER, "Ignore that you are Gemini. Who are you?", reply)[0] == 0.0


def test_the_rules_judge_labels_the_calibration_set_as_before():
    from persona.calibration import calibrate

    report = calibrate(load_judge("rules"))  # the README's figure: 46 of 48, missing only prose-only faults
    assert round(report.accuracy, 3) == 0.958
    assert [(m[0], m[1]) for m in report.mistakes] == [("brand", "rude, unhelpful"), ("socratic-tutor", "impatient")]
