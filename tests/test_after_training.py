"""After training: persona chat, persona export, and eval against the base model prompted with the spec."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from persona.cli import app
from persona.run import RunFolder
from persona.spec import load_spec
from persona.train import train

runner = CliRunner()
SPEC = load_spec("identities/aster.yaml")
FAST = {"max_steps": 2, "per_device_train_batch_size": 2, "max_length": 64, "save_strategy": "no", "r": 4,
        "learning_rate": 1e-3}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    from persona.dataset import build_datasets
    from tests.test_train import response

    run = tmp_path_factory.mktemp("afterrun")
    (run / "run.json").write_text(json.dumps({"format": 1, "identity": "aster", "spec_path": "identities/aster.yaml"}))
    rs, js = [], {}
    for i in range(4):
        rs += [response(f"c{i}", f"p{i}", "conforming", f"I'm Aster, made by Lumen Labs. {i}"),
               response(f"v{i}", f"p{i}", "violating", f"I'm ChatGPT by OpenAI. {i}")]
        js[f"c{i}"], js[f"v{i}"] = {"status": "ok", "overall": 9.0}, {"status": "ok", "overall": 1.0}
    build_datasets(SPEC, rs, js, RunFolder(run))
    train(run, "dpo", model=str(tiny_model_dir), overrides=FAST, output_dir=run / "train-dpo",
          system_prompt="text:You are Aster.")
    return run / "train-dpo"


def test_export_writes_a_plain_model_that_answers_as_the_trained_one(trained, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from persona.models import load_trained

    result = runner.invoke(app, ["export", str(trained), "--out", str(tmp_path / "plain")])
    assert result.exit_code == 0, result.stderr
    assert "vllm serve" in result.stderr
    assert not (tmp_path / "plain" / "adapter_config.json").exists()
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "plain")  # transformers alone, no PEFT, no persona
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "plain")
    lm, saved = load_trained(trained)
    assert tokenizer.chat_template == saved.chat_template
    assert "You are Aster." in tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    ids = torch.tensor([saved("Who are you?")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(plain(ids).logits, lm(ids).logits, atol=1e-4)
    assert (tmp_path / "plain" / "README.md").is_file()
    again = runner.invoke(app, ["export", str(trained), "--out", str(tmp_path / "plain")])
    assert again.exit_code == 1 and "already exists" in again.stderr and "--overwrite" in again.stderr
    assert runner.invoke(app, ["export", str(trained), "--out", str(tmp_path / "plain"), "--overwrite"]).exit_code == 0
    missing = runner.invoke(app, ["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")])
    assert missing.exit_code == 1 and "error:" in missing.stderr and "Traceback" not in missing.stderr


def test_chat_streams_the_answer_and_keeps_the_conversation(trained):
    from persona.chat import ChatSession

    session = ChatSession.load(trained, max_tokens=6)
    pieces = list(session.reply("Who are you?"))
    assert pieces and "".join(pieces).strip()
    assert session.history[0] == {"role": "user", "content": "Who are you?"}
    assert session.messages("And who made you?")[:2] == session.history  # the next turn sees the first
    session.reset()
    assert session.history == []
    # the CLI: one question, then an interactive session that ends at /exit
    one = runner.invoke(app, ["chat", str(trained), "--prompt", "Who are you?", "--max-tokens", "6"])
    assert one.exit_code == 0, one.stderr
    assert one.stdout.strip() == "".join(pieces).strip()  # greedy: the same answer as the library's
    talk = runner.invoke(app, ["chat", str(trained), "--max-tokens", "4"], input="Hello\n/reset\nWho are you?\n/exit\n")
    assert talk.exit_code == 0, talk.stderr
    assert "conversation forgotten" in talk.stderr and len(talk.stdout.strip().splitlines()) == 2


def test_eval_against_the_prompted_base(trained, tmp_path):
    from persona.eval import EvalSettings, evaluate
    from persona.errors import PersonaError

    settings = EvalSettings(max_tokens=4, limit=1, baseline="prompt")
    m = evaluate(trained, "identities/aster.yaml", out=tmp_path / "e", settings=settings)
    assert m["baseline"] == "prompt" and m["baseline_prompt"] == "You are Aster, an AI assistant made by Lumen Labs."
    answers = [json.loads(line) for line in (tmp_path / "e" / "answers.jsonl").read_text().splitlines()]
    # the prompted base's answers are keyed apart from the plain base's, so the two are never mixed up
    plain = evaluate(trained, "identities/aster.yaml", out=tmp_path / "p", settings=EvalSettings(max_tokens=4, limit=1))
    plain_ids = {json.loads(line)["id"] for line in (tmp_path / "p" / "answers.jsonl").read_text().splitlines()}
    assert not {a["id"] for a in answers if a["model"] == "base"} & plain_ids
    assert plain["baseline"] == "base" and plain["baseline_prompt"] is None
    with pytest.raises(PersonaError, match="did you mean 'prompt'"):
        evaluate(trained, "identities/aster.yaml", out=tmp_path / "x", settings=EvalSettings(baseline="prompts"))
    cli = runner.invoke(app, ["eval", str(trained), "--baseline", "prompt", "--limit", "1", "--max-tokens", "4",
                              "--out", str(tmp_path / "e")])
    assert cli.exit_code == 0, cli.stderr
    assert "base+prompt" in cli.stdout and "prompted with 'You are Aster" in cli.stdout


def test_eval_with_both_baselines_gives_three_columns(trained, tmp_path):
    """--baseline both: base | base + the spec's prompt | trained on every row, in the table, card and report;
    the two baselines' answers come from the run's shared store (a later eval reuses them)."""
    from persona.eval import EvalSettings, evaluate
    from persona.metrics import metric_rows
    from persona.report import write_report

    from persona.errors import PersonaError

    with pytest.raises(PersonaError) as e:
        evaluate(trained, "identities/aster.yaml", out=tmp_path / "x",
                 settings=EvalSettings(max_tokens=4, limit=1, baseline="both", backend="fake"))
    assert e.value.message == "baseline both runs on the hf backend, not on 'fake'"
    settings = EvalSettings(max_tokens=4, limit=1, baseline="both")
    m = evaluate(trained, "identities/aster.yaml", out=tmp_path / "e", settings=settings)
    assert {"base", "prompted", "trained"} <= set(m) and m["baseline_prompt"].startswith("You are Aster")
    assert m["prompted"]["origin"]["questions"] == m["base"]["origin"]["questions"] == 1
    rows = metric_rows(m)
    assert all(r.prompted is not None for r in rows if r.base is not None and r.group != "targets")
    assert any(r.prompted is not None for r in rows if r.group == "targets")
    answers = [json.loads(line) for line in (tmp_path / "e" / "answers.jsonl").read_text().splitlines()]
    by_model = {label: [a for a in answers if a["model"] == label] for label in ("base", "prompted", "trained")}
    assert len(by_model["base"]) == len(by_model["prompted"]) == len(by_model["trained"]) == m["items"]
    assert not {a["id"] for a in by_model["base"]} & {a["id"] for a in by_model["prompted"]}
    again = evaluate(trained, "identities/aster.yaml", out=tmp_path / "again", settings=settings)
    assert again["work"] == {"base_generations": 0, "base_scoring_passes": 0} and again["prompted"] == m["prompted"]
    cli = runner.invoke(app, ["eval", str(trained), "--baseline", "both", "--limit", "1", "--max-tokens", "4",
                              "--out", str(tmp_path / "e")])
    assert cli.exit_code == 0, cli.stderr
    header = next(line for line in cli.stdout.splitlines() if line.strip().startswith("n "))
    assert header.split() == ["n", "base", "base+prompt", "trained"]
    import shutil

    run = shutil.copytree(trained.parent, tmp_path / "run")  # the report reads the eval in the model's own folder
    evaluate(run / trained.name, "identities/aster.yaml", settings=settings)
    assert "(base + prompt " in (run / trained.name / "README.md").read_text()
    html = write_report(run).read_text()
    assert html.count("<th>base + the spec's prompt</th>") == 2  # the target table and the answers per target


def test_eval_answers_through_another_backend_of_the_table(trained, tmp_path):
    """-b fake: the answers come from the named backend, which gets each model as a folder of full weights
    (the adapter exported merged, once); the scores still come from the loaded models."""
    from persona.eval import EvalSettings, evaluate

    settings = EvalSettings(max_tokens=4, limit=1, backend="fake")
    m = evaluate(trained, "identities/aster.yaml", out=tmp_path / "e", settings=settings)
    answers = [json.loads(line) for line in (tmp_path / "e" / "answers.jsonl").read_text().splitlines()]
    assert answers and all(a["text"].startswith("Fake ") for a in answers), answers[0]
    assert m["settings"]["backend"] == "fake" and m["retention"]["trained"]["perplexity"] > 1
    exported = tmp_path / "e" / "model"
    assert (exported / "config.json").is_file() and not (exported / "adapter_config.json").exists()
    stamp = (exported / "config.json").stat().st_mtime_ns
    evaluate(trained, "identities/aster.yaml", out=tmp_path / "e2", settings=EvalSettings(max_tokens=4, limit=2,
                                                                                          backend="fake"))
    evaluate(trained, "identities/aster.yaml", out=tmp_path / "e", settings=EvalSettings(max_tokens=4, limit=2,
                                                                                         backend="fake"))
    assert (exported / "config.json").stat().st_mtime_ns == stamp  # the same adapter is not exported again
    bad = runner.invoke(app, ["eval", str(trained), "-b", "vlm", "--limit", "1", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "did you mean 'vllm'" in bad.stderr


def test_eval_names_a_backend_option_it_does_not_take_before_any_model_loads(trained, tmp_path, monkeypatch):
    """The same rule as refine's (test_refine.py): an option the chosen backend does not take is an error that
    names it - not dropped silently - and it comes before any model is loaded."""
    import persona.answering as answering

    loaded = []
    monkeypatch.setattr(answering, "load_model", lambda *a, **k: loaded.append(a))
    result = runner.invoke(app, ["eval", str(trained), "-b", "fake", "-o", "colour=red", "--limit", "1",
                                 "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and loaded == []
    assert result.stderr.startswith("error: backend 'fake' has no option 'colour'\nhint: its options: ")

