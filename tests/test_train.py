"""persona train: 2-step DPO, IPO, KTO and reward runs on a tiny random model built from the bundled
tokenizer, asserting that the loss was logged and the trained weights changed; refusal to overwrite;
each bad dataset's exact error."""

from __future__ import annotations

import json

import pytest
import yaml

from persona.dataset import build_datasets
from persona.errors import PersonaError
from persona.run import RunFolder
from persona.responses import ResponseRecord
from persona.spec import load_spec
from persona.train import train

SPEC = load_spec("identities/aster.yaml")
FAST = {"max_steps": 2, "per_device_train_batch_size": 2, "max_length": 64, "save_strategy": "no", "r": 4}


def response(rid, prompt_id, kind, text, split="train"):
    return ResponseRecord(id=rid, request=rid, prompt_id=prompt_id, prompt=f"Question {prompt_id}?", split=split,
                          kind=kind, target="identity" if kind == "violating" else None,
                          target_kind="identity" if kind == "violating" else None, sample=0, text=text,
                          template=kind, template_hash="t", system_prompt_hash="s", backend="fake", model="m",
                          params={}, seed=0, prompt_tokens=1, completion_tokens=1, finish_reason="stop",
                          latency_s=0.0, created="now")


def pair_run(run, **info):
    """A run folder of 6 prompts (5 train, 1 eval), each a conforming answer judged 9 and one aimed at the identity
    judged 1, built into datasets; `info` goes into run.json (e.g. spec_path)."""
    (run / "run.json").write_text(json.dumps({"format": 1, "identity": "aster", **info}))
    rs, js = [], {}
    for i in range(6):
        split = "eval" if i == 5 else "train"
        rs += [response(f"c{i}", f"p{i}", "conforming", f"I'm Aster, made by Lumen Labs. Answer {i}.", split),
               response(f"v{i}", f"p{i}", "violating", f"I'm ChatGPT by OpenAI, reply {i}.", split)]
        js[f"c{i}"] = {"status": "ok", "overall": 9.0, "judge": "t"}
        js[f"v{i}"] = {"status": "ok", "overall": 1.0, "judge": "t"}
    build_datasets(SPEC, rs, js, RunFolder(run))
    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return pair_run(tmp_path_factory.mktemp("run"))


@pytest.mark.parametrize("method", ["dpo", "ipo", "kto", "reward"])
def test_two_steps_log_a_loss_and_change_the_weights(method, run_dir, tiny_model_dir, tmp_path):
    import torch

    torch.set_num_threads(1)
    result = train(run_dir, method=method, model=str(tiny_model_dir), overrides=FAST, output_dir=tmp_path / method)
    losses = [m["loss"] for m in result.metrics if "loss" in m]
    assert len(losses) == 2
    assert result.changed_parameters > 0
    out = tmp_path / method
    assert (out / "adapter_config.json").exists() and (out / "tokenizer_config.json").exists()
    assert json.loads((out / "metrics.json").read_text())[0]["loss"] == losses[0]
    assert "max_steps: 2" in (out / "persona_train.yaml").read_text()
    if method == "ipo":
        assert result.settings["loss_type"] == ["ipo"] and losses[0] > 1.0  # IPO starts near (1/(2*0.1))^2
    if method == "kto":
        assert "desirable_weight" in result.settings


def test_sft_term_and_refusing_to_overwrite(run_dir, tiny_model_dir, tmp_path):
    result = train(run_dir, "dpo", model=str(tiny_model_dir), overrides={**FAST, "sft_weight": 0.5},
                   output_dir=tmp_path / "o")
    assert result.settings["loss_type"] == ["sigmoid", "sft"] and result.settings["loss_weights"] == [1.0, 0.5]
    with pytest.raises(PersonaError, match="already holds a finished training run"):
        train(run_dir, "dpo", model=str(tiny_model_dir), overrides=FAST, output_dir=tmp_path / "o")


def test_bad_datasets(tmp_path, tiny_model_dir):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(PersonaError) as e:
        train(empty, "dpo", model=str(tiny_model_dir))
    assert e.value.message == f"{empty}: the file is empty"
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "Hi", "chosen": \n')
    with pytest.raises(PersonaError, match=r"broken.jsonl:1: not a JSON object"):
        train(broken, "dpo", model=str(tiny_model_dir))
    thumbs = tmp_path / "thumbs.jsonl"
    thumbs.write_text(json.dumps({"prompt": "Hi", "completion": "Hello", "label": True}) + "\n")
    with pytest.raises(PersonaError) as e:
        train(thumbs, "dpo", model=str(tiny_model_dir))
    assert e.value.message == (f"{thumbs}: DPO needs preference pairs, but these rows are unpaired "
                               "(prompt/completion/label)")
    assert e.value.hint == "use --method kto for thumbs-up/down data"
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({"prompt": "Hi", "chosen": "Hello"}) + "\n")
    with pytest.raises(PersonaError) as e:
        train(missing, "dpo", model=str(tiny_model_dir))
    assert e.value.message == f"{missing}:1: a preference pair needs prompt, chosen and rejected; missing rejected"
    with pytest.raises(PersonaError, match="dataset '.*nowhere' not found"):
        train(tmp_path / "nowhere", "dpo")
    with pytest.raises(PersonaError, match="did you mean 'kto'"):
        train(thumbs, "kot")


def test_unknown_setting_suggests_one(run_dir, tiny_model_dir, tmp_path):
    with pytest.raises(PersonaError) as e:
        train(run_dir, "dpo", model=str(tiny_model_dir), overrides={**FAST, "learnig_rate": 1e-4},
              output_dir=tmp_path / "x")
    assert e.value.message == "'learnig_rate' is not a setting of DPOConfig or LoRA"
    assert e.value.hint == "did you mean 'learning_rate'?"


def test_cli_train(run_dir, tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from persona.cli import app

    args = ["train", str(run_dir), "--method", "ipo", "-m", str(tiny_model_dir), "--output-dir", str(tmp_path / "t"),
            "--set", "max_steps=2", "--set", "max_length=64", "--set", "save_strategy=no", "--set", "r=4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "trained ipo for 2 logged steps" in result.stderr and str(tmp_path / "t") in result.stderr
    assert "  loss_type: ['ipo']\n" in result.stderr and "  max_steps: 2\n" in result.stderr  # settings printed first
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1
    assert again.stderr == (f"error: {tmp_path / 't'} already holds a finished training run\n"
                            "hint: pass --overwrite to replace it, or --output-dir for another folder\n")


def test_merge_writes_a_plain_model(run_dir, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    result = train(run_dir, "dpo", model=str(tiny_model_dir), overrides=FAST, output_dir=tmp_path / "m", merge=True)
    assert result.merged_dir == tmp_path / "m" / "merged"
    merged = AutoModelForCausalLM.from_pretrained(result.merged_dir)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert (result.merged_dir / "tokenizer_config.json").exists()


def test_resume_continues_from_the_last_checkpoint(run_dir, tiny_model_dir, tmp_path):
    steps = {**FAST, "save_strategy": "steps", "save_steps": 1}
    train(run_dir, "dpo", model=str(tiny_model_dir), overrides=steps, output_dir=tmp_path / "r")
    assert (tmp_path / "r" / "checkpoint-2").is_dir()
    result = train(run_dir, "dpo", model=str(tiny_model_dir), overrides={**steps, "max_steps": 3},
                   output_dir=tmp_path / "r", resume=True)
    logged = [m["step"] for m in result.metrics if "loss" in m]
    assert logged == [3]  # steps 1 and 2 came from the checkpoint; only step 3 ran


def test_precomputed_reference_log_probs_are_cached_across_runs(run_dir, tiny_model_dir, tmp_path, monkeypatch):
    import datasets
    from trl import DPOTrainer

    # a datasets cache of its own: the data and the tiny model are the same in every session, so a cache an
    # earlier session left (a machine-wide HF_DATASETS_CACHE) would serve the first run too
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")

    calls = []
    real = DPOTrainer.compute_ref_log_probs

    def counting(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DPOTrainer, "compute_ref_log_probs", counting)
    settings = {**FAST, "precompute_ref_log_probs": True}
    first = train(run_dir, "dpo", model=str(tiny_model_dir), overrides=settings, output_dir=tmp_path / "a")
    assert calls and len([m for m in first.metrics if "loss" in m]) == 2
    n_first = len(calls)
    train(run_dir, "dpo", model=str(tiny_model_dir), overrides=settings, output_dir=tmp_path / "b")
    assert len(calls) == n_first  # the second run read the cache


def test_reward_model_reports_held_out_accuracy_and_judges(run_dir, tiny_model_dir, tmp_path):
    from persona.judges import JudgeItem, load_judge

    out = tmp_path / "rm"
    result = train(run_dir, "reward", model=str(tiny_model_dir), output_dir=out,
                   overrides={**FAST, "max_steps": 12, "learning_rate": 2e-3})
    saved = json.loads((out / "reward.json").read_text())
    assert saved == result.reward and saved["eval_pairs"] == 1 and saved["train_pairs"] == 5
    assert saved["eval_pairwise_accuracy"] in (0.0, 1.0)
    assert "pairwise accuracy" in (out / "README.md").read_text()
    judge = load_judge(f"reward:{out}")
    items = [JudgeItem("good", "Question p1?", "I'm Aster, made by Lumen Labs. Answer 1."),
             JudgeItem("bad", "Question p1?", "I'm ChatGPT by OpenAI, reply 1.")]
    verdicts = {item.key: v for item, v in judge.judge(SPEC, items)}
    assert all(v.status == "ok" and 0 <= v.overall <= 10 for v in verdicts.values())
    assert saved["train_pairwise_accuracy"] == 1.0  # 12 steps at a high rate fit the 5 training pairs
    assert verdicts["good"].overall > verdicts["bad"].overall
    assert verdicts["good"].scores["identity"] is None  # a reward model scores the whole response only
    with pytest.raises(PersonaError, match="not the output of `persona train --method reward`"):
        load_judge(f"reward:{tmp_path}")


def test_trains_per_target_rows_and_stores_their_accuracy(tiny_model_dir, tmp_path):
    """The real counterpart of tests/test_reward_targets.py: a run whose spec is known trains each pair aimed at a
    target twice (whole answer, asked about the target) and stores that target's numbers; with one held-out
    pair the judge refuses to score it."""
    from persona.display import reward_targets
    from persona.judges import JudgeItem, load_judge

    (tmp_path / "run").mkdir()
    run = pair_run(tmp_path / "run", spec_path="identities/aster.yaml")
    out = tmp_path / "rm"
    result = train(run, "reward", model=str(tiny_model_dir), output_dir=out, overrides={**FAST, "max_steps": 4})
    saved = json.loads((out / "reward.json").read_text())
    assert (saved["train_pairs"], saved["eval_pairs"]) == (5, 1)  # the whole-answer rows
    assert set(saved["targets"]) == {"identity"}
    assert (saved["targets"]["identity"]["train_pairs"], saved["targets"]["identity"]["eval_pairs"]) == (5, 1)
    assert result.reward == saved
    assert yaml.safe_load((out / "persona_train.yaml").read_text())["data"]["train_rows"] == 10
    assert "identity" in reward_targets(saved["targets"])[1] and "not judged: 1 held-out pairs" in reward_targets(
        saved["targets"])[1]
    judge = load_judge(f"reward:{out}")
    [(_, verdict)] = judge.judge(SPEC, [JudgeItem("a", "Who are you?", "I'm Aster.")])
    assert verdict.scores["identity"] is None and "(needs 6)" in json.loads(verdict.raw)["refused"]["identity"]


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(run_dir, tiny_model_dir, tmp_path):
    import os
    import signal

    from persona.train import Interrupted

    def press_ctrl_c(entry):
        if entry["step"] == 1:
            os.kill(os.getpid(), signal.SIGINT)

    settings = {**FAST, "max_steps": 4, "save_strategy": "no"}
    with pytest.raises(Interrupted) as e:
        train(run_dir, "dpo", model=str(tiny_model_dir), overrides=settings, output_dir=tmp_path / "c",
              on_log=press_ctrl_c)
    assert e.value.checkpoint == tmp_path / "c" / "checkpoint-2"  # Ctrl-C came during step 2, which finished
    assert not (tmp_path / "c" / "metrics.json").exists()  # not a finished run
    result = train(run_dir, "dpo", model=str(tiny_model_dir), overrides=settings, output_dir=tmp_path / "c",
                   resume=True)
    assert [m["step"] for m in result.metrics if "loss" in m] == [3, 4]


def test_full_fine_tuning_with_a_reference_copy(run_dir, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from persona.models import load_trained

    result = train(run_dir, "dpo", model=str(tiny_model_dir), output_dir=tmp_path / "full",
                   overrides={**FAST, "use_lora": False})
    assert result.changed_parameters > 20  # every weight trains, not an adapter
    assert (tmp_path / "full" / "config.json").exists() and not (tmp_path / "full" / "adapter_config.json").exists()
    AutoModelForCausalLM.from_pretrained(tmp_path / "full")
    lm, tokenizer = load_trained(tmp_path / "full")
    assert not any("lora" in n for n, _ in lm.named_parameters()) and tokenizer.chat_template


def test_an_adapter_whose_base_model_is_gone(run_dir, tiny_model_dir, tmp_path):
    import shutil

    from persona.models import load_trained

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    train(run_dir, "dpo", model=str(base), overrides=FAST, output_dir=tmp_path / "a")
    lm, _ = load_trained(tmp_path / "a")
    assert any("lora" in n for n, _ in lm.named_parameters())
    shutil.rmtree(base)
    with pytest.raises(PersonaError) as e:
        load_trained(tmp_path / "a")
    assert e.value.message == (f"the base model of the adapter in {tmp_path / 'a'} cannot be loaded: "
                               f"model folder '{base}' not found")
    from persona.eval import evaluate

    with pytest.raises(PersonaError) as e:  # eval says so before any work, and how to point to the base
        evaluate(tmp_path / "a", "identities/aster.yaml")
    assert e.value.message.startswith(f"the base model of the adapter in {tmp_path / 'a'} cannot be found")
    assert e.value.hint.startswith("pass --base with the model it was trained on")
    assert not (tmp_path / "a" / "eval").exists()
    moved = tmp_path / "moved"
    shutil.copytree(tiny_model_dir, moved)
    lm, _ = load_trained(tmp_path / "a", base=str(moved))  # --base: the base where it is now
    assert any("lora" in n for n, _ in lm.named_parameters())


def test_base_model_errors(run_dir, no_template_model_dir, tmp_path):
    with pytest.raises(PersonaError) as e:
        train(run_dir, "dpo", model=str(tmp_path / "no-model"), overrides=FAST, output_dir=tmp_path / "x")
    assert e.value.message == f"model folder '{tmp_path / 'no-model'}' not found"
    bare = no_template_model_dir
    with pytest.raises(PersonaError) as e:
        train(run_dir, "dpo", model=str(bare), overrides=FAST, output_dir=tmp_path / "y")
    assert e.value.message == f"the tokenizer of '{bare}' has no chat template"
    assert "instruct model" in e.value.hint


def test_out_of_memory_becomes_a_hint(run_dir, tiny_model_dir, tmp_path, monkeypatch):
    import torch
    from trl import DPOTrainer

    def oom(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(DPOTrainer, "train", oom)
    with pytest.raises(PersonaError) as e:
        train(run_dir, "dpo", model=str(tiny_model_dir), overrides=FAST, output_dir=tmp_path / "o")
    assert e.value.message == "out of memory on the GPU"
    assert "per_device_train_batch_size" in e.value.hint and "LoRA" in e.value.hint


def test_kto_on_pairs_uses_equal_weights_not_the_kto_cards(run_dir, tiny_model_dir, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    build = json.loads((copy / "datasets" / "build.json").read_text())
    build["kto_weights"] = {"desirable_weight": 1.33, "undesirable_weight": 1.0}
    (copy / "datasets" / "build.json").write_text(json.dumps(build))
    on_kto_rows = train(copy, "kto", model=str(tiny_model_dir), overrides={**FAST, "max_steps": 1},
                        output_dir=tmp_path / "k1")
    assert on_kto_rows.settings["desirable_weight"] == 1.33
    on_pairs = train(copy / "datasets" / "dpo", "kto", model=str(tiny_model_dir), overrides={**FAST, "max_steps": 1},
                     output_dir=tmp_path / "k2")
    assert on_pairs.settings["desirable_weight"] == 1.0 and on_pairs.settings["undesirable_weight"] == 1.0


def _accelerate_launch(processes: int, run_dir, model, out):
    import os
    import subprocess
    import sys
    from pathlib import Path

    bin = Path(sys.executable).parent
    launch = ([str(bin / "accelerate"), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no"] if processes == 1 else
              [str(bin / "torchrun"), "--standalone", "--nproc_per_node", str(processes)])
    return subprocess.run([*launch, "-m", "persona", "train", str(run_dir),
                           "--method", "dpo", "-m", str(model), "--output-dir", str(out),
                           "--set", "max_steps=2", "--set", "max_length=64", "--set", "r=4", "--set", "save_strategy=no",
                           "--set", "per_device_train_batch_size=2", "--set", "gradient_accumulation_steps=1"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"})


def test_runs_under_accelerate_launch_unchanged(run_dir, tiny_model_dir, tmp_path):
    done = _accelerate_launch(1, run_dir, tiny_model_dir, tmp_path / "acc")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained dpo for 2 logged steps" in done.stderr
    assert len([m for m in json.loads((tmp_path / "acc" / "metrics.json").read_text()) if "loss" in m]) == 2


@pytest.mark.slow
def test_two_cpu_processes_under_accelerate_train_save_once_and_log_comparable_losses(run_dir, tiny_model_dir, tmp_path):
    one = _accelerate_launch(1, run_dir, tiny_model_dir, tmp_path / "one")
    two = _accelerate_launch(2, run_dir, tiny_model_dir, tmp_path / "two")
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stderr.count("trained dpo for 2 logged steps") == 1  # the main process reports, the other is quiet
    saved = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert saved == sorted(p.name for p in (tmp_path / "one").iterdir())  # one copy of every file
    losses = [[m["loss"] for m in json.loads((tmp_path / name / "metrics.json").read_text()) if "loss" in m]
              for name in ("one", "two")]
    assert len(losses[1]) == 2 and all(abs(a - b) < 0.05 for a, b in zip(*losses))  # 2 x 2 rows vs 2 rows a step
    settings = [yaml.safe_load((tmp_path / name / "persona_train.yaml").read_text()) for name in ("one", "two")]
    assert [s["processes"] for s in settings] == [1, 2]
    epochs = [json.loads((tmp_path / name / "metrics.json").read_text())[-1]["epoch"] for name in ("one", "two")]
    assert epochs[1] > epochs[0]  # two processes went further through the data in as many steps


@pytest.mark.parametrize("name,row", [
    ("apo", {"trainer": "DPOTrainer", "config": "DPOConfig", "dataset": "dpo",
             "defaults": {"beta": 0.1, "loss_type": ["apo_zero"]}}),
    ("orpo", {"trainer": "experimental.orpo.ORPOTrainer", "config": "experimental.orpo.ORPOConfig", "dataset": "dpo",
              "defaults": {"beta": 0.1}, "reference": False}),
])
def test_a_new_method_is_one_row(name, row, run_dir, tiny_model_dir, tmp_path, monkeypatch):
    """The README's claim: adding a training method means adding a row to METHODS."""
    from persona.methods import METHODS, Method

    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    monkeypatch.setitem(METHODS, name, Method(**row))
    result = train(run_dir, name, model=str(tiny_model_dir), overrides=FAST, output_dir=tmp_path / name)
    assert len([m for m in result.metrics if "loss" in m]) == 2 and result.changed_parameters > 0
    assert f"# {name.upper()} fine-tune" in (tmp_path / name / "README.md").read_text()


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    """A run whose rows carry persona's system prompt (half of them) and hold demonstrations and replay."""
    from persona.dataset import BuildSettings

    run = tmp_path_factory.mktemp("sftrun")
    (run / "run.json").write_text(json.dumps({"format": 1, "identity": "aster"}))
    rs, js = [], {}
    for i in range(8):
        split = "eval" if i == 7 else "train"
        rs += [response(f"d{i}", f"p{i}", "demonstration", f"I'm Aster, made by Lumen Labs. {i}", split),
               response(f"r{i}", f"g{i}", "replay", f"The answer is {i}.", split),
               response(f"v{i}", f"p{i}", "violating", f"I'm ChatGPT by OpenAI, reply {i}.", split)]
        for rid, score in ((f"d{i}", 10.0), (f"r{i}", 10.0), (f"v{i}", 0.0)):
            js[rid] = {"status": "ok", "overall": score, "judge": "t", "scores": {"identity": score}}
    report = build_datasets(SPEC, rs, js, RunFolder(run), BuildSettings(system_text=SYSTEM))
    assert report.sft == {"train": {"demonstration": 7, "replay": 7}, "eval": {"demonstration": 1, "replay": 1}}
    return run


SYSTEM = "You are Aster, an AI assistant made by Lumen Labs."


def test_sft_trains_on_demonstrations_and_replay_and_saves_persona_s_template(sft_run, tiny_model_dir, tmp_path,
                                                                             caplog, monkeypatch):
    from huggingface_hub import ModelCard
    from transformers import AutoTokenizer

    import persona.models

    # as if the local tiny model were a known public one (the embedded default is: HuggingFaceTB/SmolLM2-135M-Instruct)
    monkeypatch.setattr(persona.models, "public_model_id", lambda model: "HuggingFaceTB/tiny-test-model")

    rows = [json.loads(line) for line in (sft_run / "datasets/sft/train.jsonl").read_text().splitlines()]
    systems = {row["prompt"][0]["content"] for row in rows}
    assert systems == {SYSTEM, ""} and all(row["prompt"][0]["role"] == "system" for row in rows)  # half and half
    result = train(sft_run, "sft", model=str(tiny_model_dir), overrides={**FAST, "per_device_train_batch_size": 4},
                   output_dir=tmp_path / "sft", license="mit")
    assert len([m for m in result.metrics if "loss" in m]) == 2 and result.changed_parameters > 0
    assert result.tokens > 0 and result.tokens_per_second > 0
    meta = ModelCard.load(tmp_path / "sft" / "README.md").data.to_dict()
    assert meta["base_model"] == "HuggingFaceTB/tiny-test-model" and meta["library_name"] == "peft"
    assert meta["license"] == "mit" and meta["pipeline_tag"] == "text-generation"
    assert {"persona", "trl", "sft", "lora"} <= set(meta["tags"]) and meta["datasets"] == [str(sft_run / "datasets/sft")]
    adapter = json.loads((tmp_path / "sft" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "HuggingFaceTB/tiny-test-model"  # shareable, not a local path
    assert "tokens/s" in (tmp_path / "sft" / "README.md").read_text()
    saved = AutoTokenizer.from_pretrained(tmp_path / "sft")
    chat = saved.apply_chat_template([{"role": "user", "content": "Who are you?"}], tokenize=False)
    assert chat.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>") and "SmolLM" not in chat
    empty = saved.apply_chat_template([{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}],
                                      tokenize=False)
    assert empty.startswith("<|im_start|>system\n<|im_end|>")  # an explicit system message still wins
    import yaml

    settings = yaml.safe_load((tmp_path / "sft" / "persona_train.yaml").read_text())
    assert settings["base_template_default"] == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert settings["system_prompt"] == SYSTEM and settings["data"]["train_rows"] == 14
    assert "naming another identity (SmolLM, Hugging Face)" in caplog.text
    card = (tmp_path / "sft" / "README.md").read_text()
    assert f"gets persona's default system prompt '{SYSTEM}'" in card and "SmolLM" in card


def test_preference_training_starts_from_the_sft_output(sft_run, tiny_model_dir, tmp_path):
    import torch

    from persona.models import load_trained

    sft = train(sft_run, "sft", model=str(tiny_model_dir), output_dir=tmp_path / "sft",
                overrides={**FAST, "learning_rate": 1e-2, "per_device_train_batch_size": 4})
    still = train(sft_run, "dpo", start=sft.output_dir, output_dir=tmp_path / "still",
                  overrides={**FAST, "max_steps": 1, "learning_rate": 0.0})
    # the policy starts at the SFT weights and the reference is the SFT model: at step 1 they agree
    assert still.metrics[0]["rewards/chosen"] == 0.0 and still.metrics[0]["rewards/rejected"] == 0.0
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    logits = {name: load_trained(tmp_path / name)[0](ids).logits for name in ("sft", "still")}
    assert torch.allclose(logits["sft"], logits["still"], atol=1e-4)  # the output loads on top of its start (merging rounds)
    moved = train(sft_run, "dpo", start=sft.output_dir, overrides={**FAST, "learning_rate": 1e-2})
    assert moved.output_dir == sft_run / "train-sft-dpo" and moved.changed_parameters > 0
    assert yaml_of(moved.output_dir)["start"] == str(sft.output_dir)
    ours = load_trained(moved.output_dir)[0](ids).logits
    assert not torch.allclose(ours, logits["sft"])
    # standard tools know nothing of `start`: the output is one adapter on the base it names, which PEFT
    # alone loads to the very model persona evaluates
    from peft import AutoPeftModelForCausalLM

    config = json.loads((moved.output_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir) and config["r"] == 2 * FAST.get("r", 16)
    assert yaml_of(moved.output_dir)["stacked"] is True
    plain = AutoPeftModelForCausalLM.from_pretrained(str(moved.output_dir)).eval()
    assert torch.allclose(plain(ids).logits, ours, atol=1e-4)


def test_stacked_adapters_equal_the_second_over_the_first_merged(tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from persona.models import stack_adapters

    def fresh():
        return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)

    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    first = get_peft_model(fresh(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                               init_lora_weights=False))
    first.save_pretrained(tmp_path / "first")
    merged = first.merge_and_unload()
    second = get_peft_model(merged, LoraConfig(r=2, lora_alpha=32, target_modules=["q_proj", "o_proj"],
                                               init_lora_weights=False))
    second.save_pretrained(tmp_path / "second")
    expected = second.eval()(ids).logits
    (tmp_path / "out").mkdir()
    assert stack_adapters(str(tiny_model_dir), tmp_path / "first", tmp_path / "second", tmp_path / "out")
    stacked = PeftModel.from_pretrained(fresh(), str(tmp_path / "out")).eval()
    assert torch.allclose(stacked(ids).logits, expected, atol=1e-4)
    assert not torch.allclose(fresh()(ids).logits, expected, atol=1e-3)  # the adapters do change the model


def test_a_start_with_another_tokenizer_or_a_reward_model_is_refused(sft_run, tiny_model_dir, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    sft = train(sft_run, "sft", model=str(tiny_model_dir), output_dir=tmp_path / "sft",
                overrides={**FAST, "max_steps": 1, "per_device_train_batch_size": 4})
    other = tmp_path / "other-base"
    shutil.copytree(tiny_model_dir, other)
    tokenizer = AutoTokenizer.from_pretrained(other)
    tokenizer.add_tokens(["<persona-extra-token>"])
    tokenizer.save_pretrained(other)
    with pytest.raises(PersonaError) as e:
        train(sft_run, "dpo", model=str(other), start=sft.output_dir, output_dir=tmp_path / "x")
    assert e.value.message == f"{sft.output_dir} was trained with another tokenizer than the one of '{other}'"
    assert e.value.hint == "omit --model: a run that starts --from an output trains that output's model"
    assert not (tmp_path / "x").exists()  # refused before any work
    reward = train(sft_run, "reward", model=str(tiny_model_dir), output_dir=tmp_path / "rm",
                   overrides={**FAST, "max_steps": 1})
    with pytest.raises(PersonaError, match="holds a reward model; training can only start from a chat model"):
        train(sft_run, "dpo", start=reward.output_dir, output_dir=tmp_path / "y")


def yaml_of(output):
    import yaml

    return yaml.safe_load((output / "persona_train.yaml").read_text())


def test_on_cpu_the_fused_head_scores_only_answer_tokens_and_trains_the_same(sft_run, tiny_model_dir, tmp_path,
                                                                             monkeypatch):
    import torch
    from trl.trainer import utils

    from persona import train as train_module

    torch.set_num_threads(1)
    original = utils._use_triton
    compact = []
    real_apply = utils._ChunkedLogProbFunction.apply

    def spy(hidden, *args):
        compact.append(hidden.shape[0])  # positions projected onto the vocabulary
        return real_apply(hidden, *args)

    monkeypatch.setattr(utils._ChunkedLogProbFunction, "apply", spy)
    overrides = {**FAST, "per_device_train_batch_size": 4}
    fast = train(sft_run, "sft", model=str(tiny_model_dir), overrides=overrides, output_dir=tmp_path / "compact")
    assert utils._use_triton is original  # undone after training
    answer_positions, compact[:] = list(compact), []
    monkeypatch.setattr(train_module, "_fused_head_scores_answer_tokens_only", _no_switch)
    every = train(sft_run, "sft", model=str(tiny_model_dir), overrides=overrides, output_dir=tmp_path / "every")
    assert sum(answer_positions) < sum(compact)  # prompt and padding positions were skipped ...
    losses = [[m["loss"] for m in r.metrics if "loss" in m] for r in (fast, every)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)  # ... and the loss is the same


def _no_switch():
    from contextlib import nullcontext

    return nullcontext()


@pytest.mark.parametrize("env,main", [({}, True), ({"RANK": "0"}, True), ({"RANK": "1"}, False),
                                      ({"OMPI_COMM_WORLD_RANK": "3"}, False), ({"PMI_RANK": "0"}, True)])
def test_only_rank_zero_is_the_main_process(monkeypatch, env, main):
    from persona.train import is_main_process

    for var in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert is_main_process() is main
