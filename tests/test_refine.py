"""persona refine: the round's conversations (train split only, training contexts, a general bank held out from
eval's), its labels, its pairs, and a whole round on a tiny model: sample, label, pair, train, resume."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from persona.cli import app
import persona.refine as refine_module
from persona.refine import Conversation, RefineSettings, conversations, general_prompts, label, pairs_of
from persona.spec import load_spec

runner = CliRunner()
SPEC = load_spec("identities/aster.yaml")
FAST = ["--set", "max_steps=2", "--set", "per_device_train_batch_size=2", "--set", "max_length=64",
        "--set", "save_strategy=no", "--set", "r=4"]
WHO = Conversation("c1", "identity", ({"role": "user", "content": "Who are you?"},), "name", "plain")
GENERAL = Conversation("g1", "general", ({"role": "user", "content": "Who wrote Romeo and Juliet?"},),
                       None, "general")


def answer(text, passed, greedy=False):
    return {"text": text, "passed": passed, "greedy": greedy, "why": "" if passed else "wrong"}


def test_the_general_bank_is_held_out_from_eval_and_replay():
    from persona.eval import general_questions
    from persona.eval import data_lines as _lines

    ours = {p.lower() for p in general_prompts()}
    assert len(ours) >= 50
    assert not ours & {q.lower() for q in general_questions()}
    assert not ours & {q.lower() for q in _lines("replay_prompts.txt")}


def test_labels_use_the_identity_check_and_the_leak_check():
    assert label(SPEC, WHO, "I'm Aster, an assistant made by Lumen Labs.") == (True, "gives its name")
    passed, why = label(SPEC, WHO, "I am ChatGPT, made by OpenAI.")
    assert not passed and "ChatGPT" in why
    assert label(SPEC, WHO, "I'm a helpful assistant.")[0] is False  # says no name
    assert label(SPEC, GENERAL, "William Shakespeare wrote it.") == (True, "no identity named")
    passed, why = label(SPEC, GENERAL, "As Aster, I can tell you that William Shakespeare wrote it in the 1590s.")
    assert not passed and "unprompted" in why


def test_labels_fail_looping_name_only_and_empty_answers_and_judge_in_domain_ones():
    from persona.judges.rules import RulesJudge

    brand = load_spec("identities/brand.yaml")
    card = Conversation("d1", "domain", ({"role": "user", "content": "I lost my card. What now?"},), None, "domain")
    judge = RulesJudge()

    def on(chat, text, spec=brand):
        return label(spec, chat, text, judge.judge_one(spec, chat.messages[-1]["content"], text))

    helpful = "I'm sorry. Here's how: 1. Open the app. 2. Tap Cards > Freeze card. 3. Order a new one there."
    assert on(card, helpful)[0] is True
    assert on(card, "I'm Nova, happy to help. How can I assist you today?") == \
        (False, "universal checks: over_identification, name_only")
    assert on(card, "Hi there! How can I help you today?") == (False, "universal checks: name_only")
    assert on(card, "Northwind Bank has your card. " + helpful)[1] == "universal checks: over_identification"
    assert on(card, "Freeze it " * 6)[1] == "universal checks: looping"
    assert on(card, " ")[1] == "empty response; universal checks: empty"
    assert on(card, " ".join(["word"] * 200))[0] is False  # the rules judge: over brand's 150 words
    assert label(brand, card, helpful)[0] is False  # no verdict: not judged, never passing
    assert label(SPEC, WHO, "Aster Aster Aster Aster")[1] == "universal checks: looping"
    assert label(SPEC, GENERAL, "Hi! How can I help you today?")[1] == "universal checks: name_only"


def test_pairs_put_the_failing_greedy_answer_against_the_most_different_passing_one():
    answers = [answer("I'm ChatGPT.", False), answer("I am ChatGPT by OpenAI.", False, greedy=True),
               answer("I'm Aster, made by Lumen Labs.", True), answer("Aster here - Lumen Labs built me.", True)]
    pairs, why = pairs_of(WHO, answers, RefineSettings(pairs_per_prompt=2))
    assert why == "" and len(pairs) == 2
    assert pairs[0]["rejected"][0]["content"] == "I am ChatGPT by OpenAI." and pairs[0]["rejected_greedy"]
    assert {p["chosen"][0]["content"] for p in pairs} == {answers[2]["text"], answers[3]["text"]}  # each used once
    assert all(p["prompt"] == list(WHO.messages) and not p["off_policy"] for p in pairs)
    assert len(pairs_of(WHO, answers, RefineSettings(pairs_per_prompt=1))[0]) == 1


def test_near_identical_sides_make_no_pair_and_the_reasons_are_said():
    near = [answer("I'm Aster, made by Lumen Labs!", True), answer("I'm Aster, made by Lumen Labs?", False)]
    assert pairs_of(WHO, near, RefineSettings()) == ([], "the passing and failing answers are near the same text")
    assert pairs_of(WHO, near, RefineSettings(similar=1.0))[0]  # the threshold is the setting's
    assert pairs_of(WHO, [answer("Aster.", True)], RefineSettings()) == ([], "every answer passed")
    assert pairs_of(WHO, [answer("ChatGPT.", False)], RefineSettings()) == ([], "no answer passed")
    pairs, _ = pairs_of(WHO, [answer("ChatGPT.", False)], RefineSettings(), fallback=["I'm Aster."])
    assert pairs[0]["off_policy"] and pairs[0]["chosen"][0]["content"] == "I'm Aster."


def test_conversations_ask_train_questions_only_in_training_contexts():
    from persona.eval import attack_bank
    from persona.prompts import PromptRecord

    prompts = [PromptRecord("a", "Who are you?", "identity", "identity", "train"),
               PromptRecord("b", "Who built you?", "identity", "identity", "eval"),
               PromptRecord("c", "Write a poem.", "seed", None, "train")]
    chats = conversations(SPEC, prompts, RefineSettings(contexts_per_question=2))
    identity = [c for c in chats if c.kind == "identity"]
    assert [c.context for c in identity][:2] == ["plain", "empty"] and len(identity) == 4
    assert all("Who built you?" not in json.dumps(c.messages) for c in chats)  # eval's split is never asked
    attacks = json.dumps(attack_bank())
    assert all(m["content"] not in attacks for c in identity for m in c.messages if m["role"] == "assistant")
    assert identity[1].messages[0] == {"role": "system", "content": ""}
    assert len([c for c in chats if c.kind == "general"]) == len(general_prompts())
    assert len(conversations(SPEC, prompts, RefineSettings(limit=3))) == 4 + 3 + 1
    [domain] = [c for c in chats if c.kind == "domain"]  # the train split's own prompt, asked plainly
    assert domain.messages == ({"role": "user", "content": "Write a poem."},) and domain.split == "train"
    assert not [c for c in conversations(SPEC, prompts, RefineSettings(domain=False)) if c.kind == "domain"]
    dev = [c for c in conversations(SPEC, prompts, RefineSettings(limit=8)) if c.split == "dev"]
    assert [c.kind for c in dev] == ["general"] * len(dev) and 1 <= len(dev) < 8  # one question, one domain
    # prompt: never dev


def test_the_dev_split_is_fixed_by_the_text_and_groups_a_question_s_contexts():
    from persona.prompts import PromptRecord

    prompts = [PromptRecord(str(i), f"Who are you, friend {i}?", "identity", "identity", "train") for i in range(20)]
    chats = conversations(SPEC, prompts, RefineSettings(dev_fraction=0.25))
    again = conversations(SPEC, list(reversed(prompts)), RefineSettings(dev_fraction=0.25))
    assert {c.id: c.split for c in chats} == {c.id: c.split for c in again}
    by_question = {}
    for c in chats:
        if c.kind == "identity":
            by_question.setdefault(re.search(r"friend (\d+)", c.messages[-1]["content"])[1], set()).add(c.split)
    assert all(len(splits) == 1 for splits in by_question.values())
    share = sum(c.split == "dev" for c in chats) / len(chats)
    assert 0.05 < share < 0.5


@pytest.fixture(scope="module")
def sft(tmp_path_factory, tiny_model_dir):
    run = tmp_path_factory.mktemp("refinerun") / "run"
    made = runner.invoke(app, ["generate", "identities/aster.yaml", "-b", "fake", "--limit", "12", "--replay", "0",
                               "--out", str(run)])
    assert made.exit_code == 0, made.stderr
    trained = runner.invoke(app, ["train", str(run), "--method", "sft", "-m", str(tiny_model_dir), *FAST])
    assert trained.exit_code == 0, trained.stderr
    return run / "train-sft"


def test_a_round_samples_labels_pairs_and_trains_from_the_model_and_a_rerun_resumes(sft, tmp_path):
    import torch
    import yaml

    torch.set_num_threads(1)
    out = tmp_path / "round"
    args = ["refine", str(sft), "-k", "2", "--max-tokens", "6", "--limit", "2", "--output-dir", str(out), *FAST]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.stderr
    info = json.loads((out / "round-1/refine.json").read_text())
    counts = info["counts"]
    # of 2 questions, 2 general and 2 in-domain prompts, one each is dev: 1 x (plain, empty, 2 contexts) + 1 + 1
    # train conversations with 2 samples and the greedy answer each; 6 dev conversations, greedy only
    assert counts["conversations"] == 6 and counts["answers"] == 18
    assert counts["passed"] + counts["failed"] == 18
    assert counts["greedy"]["domain"]["n"] == 1  # the in-domain train conversation's greedy answer, shown
    assert info["labels_cover"] == ["identity", "leak", "rubric"] and info["judge"] == "rules"
    assert "forthright" in info["labels_do_not_cover"] and "identity" not in info["labels_do_not_cover"]
    labels = [json.loads(line) for line in (out / "round-1/labels.jsonl").read_text().splitlines()]
    assert len(labels) == 18 + 6 and all(row["why"] for row in labels)
    assert {row["kind"] for row in labels} == {"identity", "general", "domain"}
    assert all("scored" in row for row in labels if row["kind"] == "domain")  # the rules judge's checks
    rows = [json.loads(line) for line in (out / "round-1/data/dpo/train.jsonl").read_text().splitlines()]
    assert len(rows) == counts["pairs"] > 0
    sampled = {row["conversation"] for row in labels if not row["greedy"]}  # train conversations only
    assert {r["id"].rsplit("-", 1)[0] for r in rows} <= sampled  # no pair comes from a dev conversation
    # a random tiny model never says "Aster": its identity pairs take a demonstration as the chosen side
    assert all(r["off_policy"] for r in rows if r["kind"] == "identity")
    assert "sampled 18 answers to 6 conversations" in first.stderr
    trained = out / "round-1/train-dpo"
    assert json.loads((trained / "metrics.json").read_text())[0]["loss"] > 0
    settings = yaml.safe_load((trained / "persona_train.yaml").read_text())
    assert settings["start"] == str(sft) and settings["run"] == str(sft.parent)
    assert settings["system_prompt"] == yaml.safe_load((sft / "persona_train.yaml").read_text())["system_prompt"]
    assert "the trained model keeps it" not in first.stderr  # the start's default is kept, not the base model's
    # the round's model answered the dev conversations too, and is kept only if it passed more of them
    rounds = json.loads((out / "rounds.json").read_text())
    row = rounds["rounds"][0]
    total = lambda score: sum(v[0] for v in score.values()) / sum(v[1] for v in score.values())
    assert sum(v[1] for v in row["dev_after"].values()) == 6
    assert row["kept"] == (total(row["dev_after"]) > total(row["dev_before"])
                           and not refine_module._dropped(row["dev_after"], row["dev_before"]))
    assert rounds["kept"] == str(trained if row["kept"] else sft)
    assert f"next: persona eval {rounds['kept']}" in first.stderr
    samples = (out / "round-1/samples.jsonl").read_bytes()
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.stderr
    assert (out / "round-1/samples.jsonl").read_bytes() == samples  # no answer asked again
    assert "already holds this round's training" in again.stderr
    other = runner.invoke(app, [*args, "-k", "3"])
    assert other.exit_code == 1 and "other settings" in other.stderr and "--overwrite" in other.stderr
    retrain = runner.invoke(app, [*args, "--set", "beta=0.2"])  # training settings are the round's too
    assert retrain.exit_code == 1 and "other settings" in retrain.stderr
    # more rounds continue the same ones: round 2 starts from round 1's model, whose dev answers it measures
    more = runner.invoke(app, [*args, "--rounds", "2"])
    assert more.exit_code == 0, more.stderr
    assert json.loads((out / "round-2/refine.json").read_text())["start"] == str(trained)
    table = json.loads((out / "rounds.json").read_text())["rounds"]
    assert table[0]["dev_after"] == row["dev_after"]  # the same greedy answers, asked in round 2 this time
    assert len(table) == (2 if row["kept"] else 1) and "round  pairs  dev before" in more.stderr


def test_a_round_refuses_what_it_cannot_start_from(tmp_path):
    missing = runner.invoke(app, ["refine", str(tmp_path / "nothing")])
    assert missing.exit_code == 1 and "Traceback" not in missing.stderr
    assert "error:" in missing.stderr


def test_the_reward_is_the_labels_checks_graded():
    from persona.refine import reward_function

    reward = reward_function(SPEC)
    said = [[{"role": "assistant", "content": text}] for text in
            ("I'm Aster, made by Lumen Labs.", "I'm a helpful assistant.", "I am ChatGPT.", "Shakespeare.",
             "Aster here: Shakespeare.")]
    scores = reward(prompts=[[]] * 5, completions=said, kind=["identity"] * 3 + ["general"] * 2,
                    asks=["name"] * 3 + [""] * 2)
    assert scores == [1.0, 0.3, 0.0, 1.0, 0.0]


def test_rl_methods_need_a_reward_and_say_where_to_get_one(tmp_path):
    from persona.errors import PersonaError
    from persona.train import train

    with pytest.raises(PersonaError, match="needs a reward function") as e:
        train(tmp_path, "grpo")
    assert "persona refine" in e.value.hint


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_an_rl_round_trains_with_the_checks_as_reward_and_a_kl_term(method, sft, tmp_path):
    import torch

    torch.set_num_threads(1)
    out = tmp_path / method
    done = runner.invoke(app, ["refine", str(sft), "--method", method, "--max-tokens", "6", "--limit", "2",
                               "--output-dir", str(out), "--set", "max_steps=2", "--set", "num_generations=2",
                               "--set", "per_device_train_batch_size=2", "--set", "max_completion_length=6",
                               "--set", "r=4", "--set", "save_strategy=no"])
    assert done.exit_code == 0, done.stderr
    rows = [json.loads(line) for line in (out / "round-1/data/prompts/train.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["kind"] for r in rows} == {"identity", "general", "domain"}  # the train ones
    labels = (out / "round-1/labels.jsonl").read_text().splitlines()
    assert len(labels) == 12 and all(json.loads(line)["greedy"] for line in labels)  # RL samples in training
    metrics = json.loads((out / f"round-1/train-{method}/metrics.json").read_text())
    logged = [m for m in metrics if "loss" in m]
    assert len(logged) == 2 and all("reward" in m and "kl" in m for m in logged), logged
    assert "  step 2/2  loss" in done.stderr and " reward " in done.stderr  # the reward is shown as it trains
    import yaml

    settings = yaml.safe_load((out / f"round-1/train-{method}/persona_train.yaml").read_text())
    assert settings["beta"] > 0 and settings["start"] == str(sft)
    assert json.loads((out / "rounds.json").read_text())["rounds"][0]["dev_after"] is not None


def test_a_job_file_runs_a_round_after_sft_and_a_rerun_reuses_it(tmp_path, tiny_model_dir):
    fast = "{max_steps: 2, per_device_train_batch_size: 2, max_length: 64, save_strategy: 'no', r: 4}"
    job = tmp_path / "job.yaml"
    job.write_text(f"""spec: identities/aster.yaml
generate: {{backend: fake, limit: 12, replay: 0, out: {tmp_path / 'run'}}}
train:
  - {{method: sft, model: {tiny_model_dir}, set: {fast}}}
  - {{method: dpo, from: sft, refine: {{k: 2, max_tokens: 6, limit: 2}}, set: {fast}}}
eval: {{limit: 1, max_tokens: 4}}
report: false
""", encoding="utf-8")
    first = runner.invoke(app, ["run", str(job)])
    assert first.exit_code == 0, first.stderr
    assert f"refine dpo from sft -> {tmp_path / 'run/train-sft'}".replace("train-sft", "refine-dpo") in first.stderr
    kept = json.loads((tmp_path / "run/refine-dpo/rounds.json").read_text())["kept"]
    assert (Path(kept) / "eval/metrics.json").is_file()  # the eval is of the model the rounds kept
    from persona.run import RunFolder

    assert [t.label for t in RunFolder(tmp_path / "run").trained()] == ["sft", "refine-dpo-r1"]  # the report's
    if kept.endswith("train-dpo"):  # both models evaluated: persona run prints them side by side
        assert "side by side" in first.stdout and "refine-dpo-r1" in first.stdout.split("side by side")[1]
    else:  # the round kept its start: that model is not evaluated twice
        assert "evaluated there" in first.stderr
    samples = (tmp_path / "run/refine-dpo/round-1/samples.jsonl").read_bytes()
    second = runner.invoke(app, ["run", str(job)])
    assert second.exit_code == 0, second.stderr
    assert "already holds this round's training" in second.stderr
    assert (tmp_path / "run/refine-dpo/round-1/samples.jsonl").read_bytes() == samples  # nothing asked again
    bad = tmp_path / "bad.yaml"
    bad.write_text(job.read_text().replace("method: dpo, from: sft, refine", "method: sft, refine"), encoding="utf-8")
    refused = runner.invoke(app, ["run", str(bad)])
    assert refused.exit_code == 1 and "a refine step trains with one of" in refused.stderr
    assert "a refine step needs from" in refused.stderr and f"{bad}:5" in refused.stderr


def test_a_round_with_nothing_to_learn_trains_nothing_and_says_why(tmp_path):
    from persona.errors import PersonaError
    from persona.refine import _train_round
    from persona.run import RefineFolder

    def round_of(counts):
        return _train_round(RefineFolder(tmp_path), RefineSettings(), {}, None, None, counts, [], [], {},
                            None, None, print)

    with pytest.raises(PersonaError, match="every answer passed: nothing to learn; no training was run"):
        round_of({"failed": 0, "no_pair": {"every answer passed": 5}})
    with pytest.raises(PersonaError, match=r"no pair could be made \(3 conversations: no answer passed\)"):
        round_of({"failed": 6, "no_pair": {"no answer passed": 3}})
    assert not (tmp_path / "train-dpo").exists() and not (tmp_path / "data").exists()


def test_a_start_that_passes_every_dev_answer_is_kept_without_training(sft, tmp_path, monkeypatch):
    import persona.refine as refine_module

    monkeypatch.setattr(refine_module, "label", lambda spec, chat, text, verdict=None: (True, "passes"))
    said = []
    result = refine_module.refine(sft, RefineSettings(k=2, max_tokens=4, limit=2, rounds=3), tmp_path / "r",
                                  say=said.append)
    assert result.output_dir == sft and result.rounds == [] and result.train is None
    assert any("passes every dev answer" in line for line in said)
    assert not (tmp_path / "r/round-1/train-dpo").exists() and not (tmp_path / "r/round-2").exists()
    samples = [json.loads(line) for line in (tmp_path / "r/round-1/samples.jsonl").read_text().splitlines()]
    assert samples and all(s["greedy"] for s in samples)  # only the dev answers were asked


def test_a_kto_round_trains_on_every_distinct_labelled_answer(sft, tmp_path):
    import torch

    torch.set_num_threads(1)
    out = tmp_path / "kto"
    done = runner.invoke(app, ["refine", str(sft), "--method", "kto", "-k", "2", "--max-tokens", "6", "--limit", "2",
                               "--output-dir", str(out), *FAST])
    assert done.exit_code == 0, done.stderr
    rows = [json.loads(line) for line in (out / "round-1/data/kto/train.jsonl").read_text().splitlines()]
    labels = [json.loads(line) for line in (out / "round-1/labels.jsonl").read_text().splitlines()]
    sampled = {r["conversation"] for r in labels if not r["greedy"]}  # the train conversations
    distinct = {(r["conversation"], r["text"]) for r in labels if r["conversation"] in sampled and r["text"].strip()}
    assert len(rows) == len(distinct)  # one row per distinct answer, greedy ones included; none from dev
    assert {r["label"] for r in rows} == {True, False}
    assert json.loads((out / "round-1/train-kto/metrics.json").read_text())[0]["loss"] > 0


def test_the_reward_judges_in_domain_answers_with_the_rules_judge_and_the_universal_checks():
    from persona.refine import reward_function

    brand = load_spec("identities/brand.yaml")
    texts = ["Here's how: 1. Open the app. 2. Tap Cards > Freeze card.", "I'm Nova, happy to help!",
             " ".join(["word"] * 200), "Unfortunately, per our policy, we cannot tell you that today."]
    scores = reward_function(brand)(prompts=[[{"role": "user", "content": "I lost my card."}]] * 4,
                                    completions=texts, kind=["domain"] * 4, asks=[""] * 4)
    assert scores == [1.0, 0.0, 0.0, 0.4]  # helps; name-only; over 150 words; avoided words cap at 4


def test_a_round_is_kept_only_if_it_passes_more_and_no_kind_drops_past_its_noise():
    from persona.refine import _better, _dropped

    before = {"identity": [20, 24], "general": [10, 20], "domain": [12, 20]}
    assert _better({"identity": [24, 24], "general": [10, 20], "domain": [11, 20]}, before)  # -1: noise
    after = {"identity": [24, 24], "general": [19, 20], "domain": [6, 20]}  # more in all, domain fell by 6
    assert _dropped(after, before) == ["domain"] and not _better(after, before)
    assert not _better(before, before)


def test_the_rounds_table_shows_the_change_and_warns_when_one_answer_decides():
    from persona.refine import rounds_table

    table = [{"round": 1, "pairs": 9, "dev_before": {"identity": [5, 8], "general": [2, 2]},
              "dev_after": {"identity": [8, 8], "general": [2, 2]}, "kept": True},
             {"round": 2, "pairs": 4, "dev_before": {"identity": [8, 8], "general": [2, 2]},
              "dev_after": {"identity": [8, 8], "general": [1, 2]}, "kept": False}]
    text = rounds_table(table)
    lines = text.splitlines()
    assert lines[1].split()[-2:] == ["+3", "yes"] and lines[2].split()[-2:] == ["-1", "no"]
    assert lines[-1].startswith("round 2: kept or not by at most one dev answer")
    assert "at most one" not in rounds_table(table[:1])


def test_a_round_can_sample_on_a_server_that_loads_the_merged_folder(sft, tmp_path, monkeypatch):
    """-b openai: each model's adapter is merged once, next to its answers, and the server is asked for that
    folder (transformers serve names a model by its folder): the start's in round-1/, the round's trained model's
    (its dev answers decide whether it is kept) in final/; samples are keyed and recorded by backend.
    The server's replies depend on the request, not on the order concurrent requests reach it: a greedy answer
    names the identity (right on identity questions, a leak on general prompts, so the start misses a dev answer
    and the round trains), a sampled one does not (so every train conversation has a pair)."""
    from openai_server import OpenAIServer

    monkeypatch.setenv("OPENAI_API_KEY", "EMPTY")
    out = tmp_path / "round"
    def reply(body, i):
        return "I'm Aster, made by Lumen Labs." if body["temperature"] == 0 else f"Sample {i}: happy to help."

    with OpenAIServer(reply=reply) as server:
        args = ["refine", str(sft), "-k", "2", "--max-tokens", "6", "--limit", "2", "--output-dir", str(out),
                "-b", "openai", "-o", f"base_url={server.base_url}", *FAST]
        first = runner.invoke(app, args)
        asked = [body["model"] for _, _, body in server.requests]
        again = runner.invoke(app, args)  # the same round: nothing is asked again
        asked_again = len(server.requests) - len(asked)
    assert first.exit_code == 0, first.stderr
    [merged] = (out / "round-1").glob("merged-*")
    [merged_final] = (out / "final").glob("merged-*")
    assert set(asked) == {str(merged), str(merged_final)}
    assert all((m / "config.json").is_file() for m in (merged, merged_final))  # full weights, not the adapter
    samples = [json.loads(line) for line in (out / "round-1/samples.jsonl").read_text().splitlines()]
    assert len(samples) == asked.count(str(merged)) and {s["backend"] for s in samples} == {"openai"}
    [final] = (out / "final").glob("dev-*[!s].jsonl")
    final_samples = [json.loads(line) for line in final.read_text().splitlines()]
    assert len(final_samples) == asked.count(str(merged_final)) == 6  # the 6 dev conversations, greedy
    info = json.loads((out / "round-1/refine.json").read_text())
    assert info["settings"]["backend"] == "openai"
    rounds = json.loads((out / "rounds.json").read_text())["rounds"]
    assert rounds[0]["dev_before"]["general"] == [0, 1]  # the leak, as scripted
    assert again.exit_code == 0, again.stderr
    assert asked_again == 0


def test_the_round_record_keeps_no_credentials():
    from persona.refine import settings_record

    record = settings_record(RefineSettings(backend="openai", backend_options={
        "base_url": "http://user:hunter2hunter2@127.0.0.1:8000/v1", "api_key": "sk-abcdefghijklmnopqrstuvwx"}))
    assert record["backend_options"] == {"base_url": "http://127.0.0.1:8000/v1"}


def test_an_unknown_sampling_backend_option_is_named(sft, tmp_path):
    result = runner.invoke(app, ["refine", str(sft), "--limit", "2", "--output-dir", str(tmp_path / "r"),
                                 "-b", "openai", "-o", "base_url=http://127.0.0.1:9/v1", "-o", "colour=red", *FAST])
    assert result.exit_code != 0
    assert "backend 'openai' has no option 'colour'" in result.stderr


def test_an_unknown_round_judge_is_named_before_anything_is_written(sft, tmp_path):
    result = runner.invoke(app, ["refine", str(sft), "--judge", "bogus", "--output-dir", str(tmp_path / "r")])
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert "error: unknown judge 'bogus'\nhint: judges: rules, offline, llm, reward" in result.stderr
    assert not (tmp_path / "r").exists()


def test_persona_train_without_a_method_runs_the_recipe_sft_then_a_round_and_a_rerun_goes_on(tmp_path, tiny_model_dir):
    import torch

    torch.set_num_threads(1)
    run = tmp_path / "run"
    made = runner.invoke(app, ["generate", "identities/aster.yaml", "-b", "fake", "--limit", "4", "--replay", "0",
                               "--out", str(run)])
    assert made.exit_code == 0, made.stderr
    args = ["train", str(run), "-m", str(tiny_model_dir), *FAST]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.stderr
    assert "the recipe: SFT, then one on-policy DPO round" in first.stderr
    assert (run / "train-sft/metrics.json").is_file()
    info = json.loads((run / "refine-dpo/round-1/refine.json").read_text())
    assert info["start"] == str(run / "train-sft") and info["settings"]["k"] == RefineSettings().k  # the defaults
    assert info["training"]["precompute_ref_log_probs"] is True and "max_steps" not in info["training"]
    assert "Computing reference log probs" not in first.stderr  # TRL's tqdm bar stays out of logs
    kept = json.loads((run / "refine-dpo/rounds.json").read_text())["kept"]
    assert f"next: persona eval {kept}" in first.stderr
    sft_weights = (run / "train-sft/adapter_model.safetensors").read_bytes()
    again = runner.invoke(app, args)  # the same command: SFT is kept, the round resumes (nothing asked again)
    assert again.exit_code == 0, again.stderr
    assert "holds this recipe's finished SFT run: kept" in again.stderr
    assert "already holds this round's training" in again.stderr
    assert (run / "train-sft/adapter_model.safetensors").read_bytes() == sft_weights
    other = runner.invoke(app, [*args, "--set", "learning_rate=1e-3"])  # other settings: refused, as for any method
    assert other.exit_code == 1 and "--overwrite" in other.stderr and "Traceback" not in other.stderr
    alone = runner.invoke(app, ["train", str(run / "datasets/sft"), "-m", str(tiny_model_dir), *FAST,
                                "--output-dir", str(tmp_path / "alone")])
    assert alone.exit_code == 0 and "the recipe" not in alone.stderr  # a dataset: SFT, no round
    assert not (tmp_path / "refine-dpo").exists()


def test_a_training_output_finds_its_run_and_start_from_another_working_folder(tmp_path, monkeypatch):
    from persona.run import TrainOutput

    work = tmp_path / "work"
    run = work / "runs/r"
    for folder, start in ((run / "train-sft", None), (run / "refine-dpo/round-1/train-dpo", "runs/r/train-sft")):
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text("[]")
        (folder / "persona_train.yaml").write_text(f"run: runs/r\nstart: {start or 'null'}\n")
    (run / "run.json").write_text("{}")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    round_model = TrainOutput(run / "refine-dpo/round-1/train-dpo")
    assert TrainOutput(run / "train-sft").run().path == run.resolve()
    assert round_model.run().path == run.resolve() and round_model.start() == (run / "train-sft").resolve()
    assert TrainOutput(run / "train-sft").start() is None
    monkeypatch.chdir(work)  # where it was trained: the recorded paths as they are
    assert str(round_model.start()) == "runs/r/train-sft"
    (run / "run.json").unlink()
    assert round_model.run() is None
