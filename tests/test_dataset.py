"""Datasets: pairs and KTO rows from judged responses, the dataset card, load_dataset, and TRL's
DPOTrainer and KTOTrainer accepting the result as it is (2 steps on a tiny model)."""

from __future__ import annotations

import json

import pytest

from persona.dataset import BuildSettings, build_datasets, kto_weights
from persona.errors import PersonaError
from persona.responses import ResponseRecord
from persona.run import RunFolder
from persona.spec import load_spec

SPEC = load_spec("identities/aster.yaml")


def response(rid, prompt_id, kind, text, split="train", target=None) -> ResponseRecord:
    return ResponseRecord(id=rid, request=rid, prompt_id=prompt_id, prompt=f"prompt {prompt_id}?", split=split,
                          kind=kind, target=target, target_kind="constraint" if target else None, sample=0,
                          text=text, template=kind, template_hash="t", system_prompt_hash="s", backend="fake",
                          model="fake-model", params={}, seed=0, prompt_tokens=1, completion_tokens=1,
                          finish_reason="stop", latency_s=0.0, created="now")


def judged(score, status="ok"):
    return {"status": status, "overall": score, "judge": "test-judge", "scores": {}}


@pytest.fixture
def built(tmp_path):
    rs = [
        response("c1", "p1", "conforming", "I'm Aster, made by Lumen Labs."),
        response("c2", "p1", "conforming", "Hello, I am Aster from Lumen Labs, how can I help?"),
        response("v1", "p1", "violating", "I'm ChatGPT, made by OpenAI.", target="identity"),
        response("v2", "p1", "violating", "Whatever. I am an assistant.", target="curious"),
        response("c3", "p2", "conforming", "Canberra is the capital."),       # scored too low to be chosen
        response("v3", "p2", "violating", "Sydney, obviously.", target="forthright"),
        response("c4", "p3", "conforming", "Canberra, chosen as a compromise.", split="eval"),
        response("v4", "p3", "violating", "Canberra, chosen as a compromise!", split="eval", target="honesty"),  # near-dup
        response("c5", "p4", "conforming", "I am Aster."),
        response("v5", "p4", "violating", "I am Aster, honestly.", target="identity"),  # margin too small
        response("v6", "p4", "violating", "tie text", target="no-harm"),
        response("c6", "p5", "conforming", "unjudged one"),
    ]
    js = {"c1": judged(9.0), "c2": judged(8.0), "v1": judged(0.0), "v2": judged(3.0), "c3": judged(4.0),
          "v3": judged(1.0), "c4": judged(9.0), "v4": judged(2.0), "c5": judged(7.0), "v5": judged(6.0),
          "v6": judged(7.0), "c6": {"status": "unjudged", "overall": None, "judge": "test-judge"}}
    report = build_datasets(SPEC, rs, js, RunFolder(tmp_path), BuildSettings(margin=2.0, license="cc-by-4.0"))
    return report, tmp_path


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pairs_respect_margin_ties_and_near_duplicates(built):
    report, run = built
    pairs = rows(run / "datasets/dpo/train.jsonl")
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [
        ("I'm Aster, made by Lumen Labs.", "I'm ChatGPT, made by OpenAI."),
        ("Hello, I am Aster from Lumen Labs, how can I help?", "Whatever. I am an assistant.")]
    assert pairs[0]["prompt"] == [{"role": "user", "content": "prompt p1?"}]
    assert pairs[0]["margin"] == 9.0 and pairs[0]["rejected_target"] == "identity"
    assert rows(run / "datasets/dpo/eval.jsonl") == []  # its only pair was a near-duplicate
    assert report.dropped == {"no in-character conforming response": 1, "near-duplicate texts": 1,
                              "margin too small": 1, "tie": 1}
    assert report.candidates == 6 and report.acceptance_rate == pytest.approx(2 / 6)
    assert report.unjudged == 1
    assert report.length["chosen_longer_share"] == 1.0


def test_kto_rows_labels_and_weights(built):
    report, run = built
    train = rows(run / "datasets/kto/train.jsonl")
    assert {r["id"]: r["label"] for r in train} == {"c1": True, "c2": True, "v1": False, "v2": False, "c3": False,
                                                    "v3": False, "c5": True, "v5": True, "v6": True}
    assert report.kto["train"] == {"desirable": 5, "undesirable": 4}
    w = report.kto_weights
    assert 1.0 <= w["weighted_ratio"] <= 4 / 3
    assert train[0]["completion"] == [{"role": "assistant", "content": "I'm Aster, made by Lumen Labs."}]


def test_judge_agreement_and_histograms(built):
    report, _ = built
    # conforming judged >= 5: c1 c2 c4 c5 (c3 is not); violating judged < 5: v1 v2 v3 v4 (v5 v6 are not)
    assert report.judge_agreement == pytest.approx(8 / 11)
    assert report.histograms["violating"] == [1, 1, 1, 1, 0, 0, 1, 1, 0, 0]


@pytest.mark.parametrize("desirable,undesirable", [(10, 30), (40, 10), (12, 10), (1, 100), (7, 7)])
def test_kto_weights_land_in_trl_range(desirable, undesirable):
    dw, uw = kto_weights(desirable, undesirable)
    assert 1.0 <= dw * desirable / (uw * undesirable) <= 4 / 3 + 1e-9


def test_cards_and_load_dataset(built):
    from datasets import load_dataset

    report, run = built
    dpo = load_dataset(str(run / "datasets/dpo"))
    kto = load_dataset(str(run / "datasets/kto"))
    assert set(dpo) == {"train"} and dpo["train"].num_rows == 2  # its eval split is empty: not declared
    assert kto["train"].num_rows == 9 and kto["eval"].num_rows == 2
    card = (run / "datasets/dpo/README.md").read_text()
    assert f"hash `{SPEC.spec_hash[:16]}`" in card and "generator models: fake:fake-model" in card
    assert "judge: test-judge" in card and "acceptance rate: 33.3% of 6 violating responses" in card
    assert "desirable_weight=" in (run / "datasets/kto/README.md").read_text()
    assert json.loads((run / "datasets/build.json").read_text())["pairs"] == {"train": 2, "eval": 0}


def test_dataset_cards_carry_hub_metadata(built):
    from huggingface_hub import DatasetCard

    _, run = built
    for kind in ("dpo", "kto", "sft"):
        card = DatasetCard.load(run / "datasets" / kind / "README.md")
        meta = card.data.to_dict()
        assert meta["license"] == "cc-by-4.0" and meta["task_categories"] == ["text-generation"]
        assert "language" not in meta  # aster's spec names no language (a spec's identity.language goes here)
        assert meta["pretty_name"].startswith(f"{SPEC.name}: ") and {"persona", "trl", kind} <= set(meta["tags"])
        assert meta["configs"][0]["config_name"].startswith("rows-") and meta["size_categories"] == ["n<1K"]
        assert "changes whenever a rebuild changes them" in card.text
    kto = DatasetCard.load(run / "datasets/kto/README.md").data.to_dict()
    assert set(kto["kto_weights"]) == {"desirable_weight", "undesirable_weight", "weighted_ratio"}


def test_a_license_is_a_hub_license_id():
    with pytest.raises(PersonaError) as e:
        BuildSettings(license="Apache License 2.0")
    assert e.value.message == "--license 'Apache License 2.0' is not a license id"


def test_a_rebuild_is_never_served_from_the_datasets_cache(built):
    from datasets import load_dataset

    report, run = built
    assert load_dataset(str(run / "datasets/kto"))["train"].num_rows == 9
    rs = [response("c1", "p1", "conforming", "I'm Aster."), response("v1", "p1", "violating", "I'm ChatGPT.")]
    build_datasets(SPEC, rs, {"c1": judged(9.0), "v1": judged(1.0)}, RunFolder(run), BuildSettings())
    assert load_dataset(str(run / "datasets/kto"))["train"].num_rows == 2
    assert load_dataset(str(run / "datasets/dpo"))["train"].num_rows == 1


def test_trl_trainers_accept_the_datasets_as_they_are(built, tiny_model_dir, tmp_path):
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    torch.set_num_threads(1)
    report, run = built
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    lora = LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM")
    common = dict(max_steps=2, per_device_train_batch_size=2, bf16=False, report_to=[], logging_steps=1,
                  max_length=128, use_cpu=True, save_strategy="no")
    dpo = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                     args=DPOConfig(output_dir=str(tmp_path / "dpo"), **common),
                     train_dataset=load_dataset(str(run / "datasets/dpo"))["train"], processing_class=tokenizer,
                     peft_config=lora)
    dpo.train()
    assert any("loss" in log for log in dpo.state.log_history)
    weights = report.kto_weights
    kto = KTOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                     args=KTOConfig(output_dir=str(tmp_path / "kto"), desirable_weight=weights["desirable_weight"],
                                    undesirable_weight=weights["undesirable_weight"], **common),
                     train_dataset=load_dataset(str(run / "datasets/kto"))["train"], processing_class=tokenizer,
                     peft_config=lora)
    kto.train()
    assert any("loss" in log for log in kto.state.log_history)


def test_pairwise_check_keeps_only_consistent_preferences(tmp_path):
    class Pairwise:  # prefers chosen for the first pair only, and is consistent on half of the pairs
        swap_consistency = None

        def prefer(self, spec, pairs):
            self.swap_consistency = 0.5
            return {key: ("a" if i == 0 else None) for i, (key, *_rest) in enumerate(pairs)}

    rs = [response("c1", "p1", "conforming", "I'm Aster, made by Lumen Labs."),
          response("v1", "p1", "violating", "I'm ChatGPT, made by OpenAI.", target="identity"),
          response("v2", "p1", "violating", "Whatever. I am an assistant.", target="curious")]
    js = {"c1": judged(9.0), "v1": judged(0.0), "v2": judged(3.0)}
    report = build_datasets(SPEC, rs, js, RunFolder(tmp_path), BuildSettings(), pairwise=Pairwise())
    assert report.pairs == {"train": 1, "eval": 0} and report.swap_consistency == 0.5
    assert report.dropped == {"pairwise judge did not prefer chosen in both orders": 1}
    assert "swap consistency 50.0%" in (tmp_path / "datasets/dpo/README.md").read_text()


def test_rejected_from_any_also_pairs_failed_conforming_attempts(tmp_path):
    spec = load_spec("identities/aster.yaml")
    rs = [response("good", "p", "conforming", "I'm Aster, made by Lumen Labs."),
          response("miss", "p", "conforming", "I am a helpful assistant from the moon."),
          response("bad", "p", "violating", "I'm ChatGPT by OpenAI.", target="identity")]
    js = {"good": judged(10.0), "miss": judged(3.0), "bad": judged(0.0)}
    only = build_datasets(spec, rs, js, RunFolder(tmp_path / "a"))
    assert only.pairs["train"] == 1 and only.candidates == 1
    both = build_datasets(spec, rs, js, RunFolder(tmp_path / "b"), BuildSettings(rejected_from="any"))
    assert both.pairs["train"] == 2 and both.candidates == 2
    rejected = [r["rejected"][0]["content"] for r in rows(tmp_path / "b" / "datasets" / "dpo" / "train.jsonl")]
    assert sorted(rejected) == ["I am a helpful assistant from the moon.", "I'm ChatGPT by OpenAI."]


def test_rejected_from_takes_only_violating_or_any(tmp_path):
    from typer.testing import CliRunner

    from persona.cli import app

    result = CliRunner().invoke(app, ["build", str(tmp_path), "--rejected-from", "all"])
    assert result.exit_code == 1
    assert result.stderr == ("error: --rejected-from 'all' is not 'violating' or 'any'\n"
                             "hint: 'any' also pairs conforming attempts the judge scored out of character\n")


def test_each_pair_teaches_what_it_says_and_truncated_answers_are_never_chosen(tmp_path):
    """A rejected answer that was written to break one target but failed only another (here: too long, for
    brand's max-length) is dropped; the failed targets are recorded; a cut-off answer is never chosen."""
    from dataclasses import replace

    spec = load_spec("identities/brand.yaml")
    long = " ".join(["word"] * 200)
    rs = [response("c1", "p1", "conforming", "Happy to help: open the app and tap Cards."),
          response("c2", "p1", "conforming", "Here's how: open the app and tap Cards and then"),  # cut off
          response("v1", "p1", "violating", long, target="no-guarantees"),        # lost on length only
          response("v2", "p1", "violating", "It's guaranteed, I promise.", target="no-guarantees"),
          response("c3", "p2", "conforming", "Here's how to do it, happy to help."),
          response("v3", "p2", "violating", "I'm ChatGPT, made by OpenAI.")]  # plain: no target
    rs[1] = replace(rs[1], finish_reason="length")
    scores = {"c1": {"max-length": 10.0, "no-guarantees": 10.0}, "c2": {"max-length": 10.0, "no-guarantees": 10.0},
              "v1": {"max-length": 0.0, "no-guarantees": 10.0}, "v2": {"max-length": 10.0, "no-guarantees": 0.0},
              "c3": {"identity": 10.0}, "v3": {"identity": 0.0}}
    js = {rid: {"status": "ok", "overall": min(s.values()), "judge": "t", "scores": s} for rid, s in scores.items()}
    js["c2"]["overall"] = 9.5  # the best score, but cut off at the token limit
    report = build_datasets(spec, rs, js, RunFolder(tmp_path), BuildSettings(system_text="You are Nova."))
    pairs = [json.loads(line) for line in (tmp_path / "datasets/dpo/train.jsonl").read_text().splitlines()]
    assert report.dropped == {"lost on another target": 1}
    assert {(p["id"], tuple(p["rejected_failed"])) for p in pairs} == {("c1>v2", ("no-guarantees",)),
                                                                        ("c3>v3", ("identity",))}
    assert all(not p["chosen"][0]["content"].endswith("and then") for p in pairs)  # c2 was never chosen
    sft = [json.loads(line) for line in (tmp_path / "datasets/sft/train.jsonl").read_text().splitlines()]
    assert {row["id"] for row in sft} == {"c1", "c3"}
    assert report.coverage == {"train": {"covered": 2, "prompts": 2}, "eval": {"covered": 0, "prompts": 0}}
    systems = [p["prompt"][0] for p in pairs] + [row["prompt"][0] for row in sft]
    assert all(m["role"] == "system" and m["content"] in ("You are Nova.", "") for m in systems)
    card = (tmp_path / "datasets/sft/README.md").read_text()
    assert "'You are Nova.' on half the rows, an empty system message on the other half" in card


def test_the_system_prompt_is_on_half_of_the_rows(tmp_path):
    rs, js = [], {}
    for i in range(40):
        rs.append(response(f"d{i}", f"p{i}", "demonstration", f"I'm Aster, made by Lumen Labs ({i})."))
        js[f"d{i}"] = judged(10.0)
    build_datasets(SPEC, rs, js, RunFolder(tmp_path), BuildSettings(system_text="You are Aster."))
    rows = [json.loads(line) for line in (tmp_path / "datasets/sft/train.jsonl").read_text().splitlines()]
    with_text = sum(row["prompt"][0]["content"] == "You are Aster." for row in rows)
    assert len(rows) == 40 and 12 <= with_text <= 28  # a hash of the row id picks: about half


def domain_reply(rid, prompt_id, text, target=None, template="domain", kind="replay"):
    from dataclasses import replace

    return replace(response(rid, prompt_id, kind, text, target=target), template=template,
                   target_kind=None)


def test_in_domain_replay_trains_the_best_accepted_answer_of_each_prompt_and_reports_it_per_target(tmp_path):
    """Per in-domain prompt, the best answer the judge accepts with no universal problem; an answer to a bait
    whose rule the judge does not score is never trained on; general replay answers keep their rule."""
    spec = load_spec("identities/brand.yaml")
    rs = [domain_reply("a1", "p1", "Here's how: open the app and tap Cards.", target="brief"),
          domain_reply("a2", "p1", "Here's how: tap Cards, then Freeze card. That's all.", target="brief"),
          domain_reply("a3", "p1", "I'm Nova, happy to help!", target="brief"),
          domain_reply("b1", "p2", "Sure, buy these three stocks today.", target="stay-on-topic"),
          domain_reply("c1", "p3", "No one can promise an approval.", target="no-guarantees"),
          domain_reply("d1", "p4", "Plants make food from light.", template="replay"),
          domain_reply("d2", "p5", "Loop loop loop loop.", template="replay")]
    js = {"a1": judged(9.0), "a2": judged(10.0), "a3": {**judged(0.0), "universal": ["over_identification"]},
          "b1": judged(10.0), "c1": {**judged(10.0), "scores": {"no-guarantees": 10.0}}, "d1": judged(10.0),
          "d2": {**judged(10.0), "universal": ["looping"]}}
    report = build_datasets(spec, rs, js, RunFolder(tmp_path), BuildSettings())
    sft = rows(tmp_path / "datasets/sft/train.jsonl")
    assert {row["id"]: row["kind"] for row in sft} == {"a2": "domain", "c1": "domain", "d1": "replay"}
    assert report.domain["brief"] == {"prompts": 1, "answers": 3, "accepted": 2, "unjudged_target": 0, "kept": 1}
    assert report.domain["stay-on-topic"]["unjudged_target"] == 1 and report.domain["stay-on-topic"]["kept"] == 0
    assert report.domain["no-guarantees"]["kept"] == 1
    card = (tmp_path / "datasets/sft/README.md").read_text()
    assert "in-domain help per target" in card


def test_identity_demonstrations_are_at_most_their_share_of_sft_and_the_plain_ones_stay(tmp_path):
    from dataclasses import replace

    spec = load_spec("identities/brand.yaml")
    demos = []
    for q in range(6):
        plain = replace(response(f"q{q}-0", f"q{q}", "demonstration", "I'm Nova, made by Northwind Bank."),
                        prompt="Who are you?", template="identity_answers")
        demos += [plain, replace(plain, id=f"q{q}-1", sample=1, asked_as="prefix")]
    helps = [domain_reply(f"h{i}", f"h{i}", f"Here's how, step {i}: open the app.") for i in range(4)]
    js = {r.id: judged(10.0) for r in demos + helps}

    def built(share):
        folder = tmp_path / str(share)
        report = build_datasets(spec, demos + helps, js, RunFolder(folder), BuildSettings(demonstration_share=share))
        return report, [row["id"] for row in rows(folder / "datasets/sft/train.jsonl") if row["kind"] == "demonstration"]

    report, kept = built(0.5)  # room for 4, but every identity question keeps one: its plainly asked answer
    assert sorted(kept) == [f"q{q}-0" for q in range(6)] and report.demonstrations_left_out["train"] == 6
    _, kept = built(0.75)  # 0.75 / 0.25 x 4 help rows = 12
    assert len(kept) == 12
    report, kept = built(1.0)
    assert len(kept) == 12 and report.demonstrations_left_out["train"] == 0
