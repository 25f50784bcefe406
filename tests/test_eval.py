"""persona eval on a tiny random model: every measurement lands in metrics.json, answers resume, the origin
claim detector on known answers, and the bad inputs (no held-out prompts, missing base, unknown folder)."""

from __future__ import annotations

import json

import pytest

from persona.errors import PersonaError
from persona.run import RunFolder
from persona.eval import ATTACKS, EvalSettings, build_items, evaluate, identity_questions, origin_claim
from persona.spec import load_spec
from persona.train import train

SPEC = load_spec("identities/aster.yaml")
FAST = {"max_steps": 2, "per_device_train_batch_size": 2, "max_length": 64, "save_strategy": "no", "r": 4}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    from tests.test_train import response
    from persona.dataset import build_datasets

    run = tmp_path_factory.mktemp("evalrun")
    (run / "run.json").write_text(json.dumps({"format": 1, "identity": "aster", "spec_path": "identities/aster.yaml"}))
    rs, js = [], {}
    for i in range(4):
        rs += [response(f"c{i}", f"p{i}", "conforming", f"I'm Aster, made by Lumen Labs. {i}"),
               response(f"v{i}", f"p{i}", "violating", f"I'm ChatGPT by OpenAI. {i}")]
        js[f"c{i}"], js[f"v{i}"] = {"status": "ok", "overall": 9.0}, {"status": "ok", "overall": 1.0}
    build_datasets(SPEC, rs, js, RunFolder(run))
    train(run, "dpo", model=str(tiny_model_dir), overrides={**FAST, "learning_rate": 1e-3}, output_dir=run / "train-dpo")
    return run / "train-dpo"


def test_origin_claims_on_known_answers():
    assert origin_claim(SPEC, "name", "I'm Aster, made by Lumen Labs.") == \
        {"right": True, "other": False, "name": True, "maker": True}
    assert origin_claim(SPEC, "maker", "I'm Aster.")["right"] is False  # asked who made it, no maker
    assert origin_claim(SPEC, "name", "I am ChatGPT, a model trained by OpenAI.")["other"] is True
    assert origin_claim(SPEC, "name", "I'm not ChatGPT - I'm Aster.") == \
        {"right": True, "other": False, "name": True, "maker": False}


def test_items_cover_probes_origin_and_every_attack():
    questions = identity_questions()
    assert len(questions) == 24 and {a for a, _ in questions} == {"name", "maker"}
    training = (__import__("persona.prompts", fromlist=["x"]).builtin_probes(SPEC, None))
    trained_texts = {t.casefold() for t, _, _ in training}
    assert not any(q.casefold() in trained_texts for _, q in questions)  # held out from generation's bank
    items = build_items(SPEC, [], None)
    origin = [i for i in items if i.kind == "origin"]
    assert len(origin) == 48 and {i.context for i in origin} == {"default", "empty"}
    assert all(i.messages[0] == {"role": "system", "content": ""} for i in origin if i.context == "empty")
    assert all(i.messages[0]["role"] == "user" for i in origin if i.context == "default")
    assert {i.attack for i in items if i.kind == "attack"} == {"break", "multi-turn", "prefilled", "injection"}
    assert all(sum(i.attack == a for i in items) == 24 for a in ("break", "multi-turn", "prefilled", "injection"))
    multi = next(i for i in items if i.attack == "multi-turn")
    assert [m["role"] for m in multi.messages] == ["user", "assistant", "user"] and "ChatGPT" in multi.messages[1]["content"]
    prefilled = next(i for i in items if i.attack == "prefilled")
    assert [m["role"] for m in prefilled.messages].count("assistant") == 3
    suffixes = {i.messages[-1]["content"].split("?", 1)[-1].split(".", 1)[-1].strip() for i in items if i.attack == "break"}
    assert len({i.messages[-1]["content"] for i in items if i.attack == "break"}) == 24 and len(suffixes) >= 6
    assert sum(i.kind == "leak" for i in items) == 24


def test_eval_texts_are_held_out_from_what_training_sees():
    """The attack bank, the general questions and the identity questions appear in no training template or
    replay prompt, for every shipped identity."""
    import json as json_module

    from persona.eval import DATA, attack_bank, general_questions
    from persona.prompts import REPLAY_SOURCE, replay_prompts
    from persona.templates import render_template
    from tests.conftest import SHIPPED_IDENTITIES

    bank = attack_bank()
    held_out = [*bank["break"], *(m["content"] for m in bank["multi-turn"] + bank["prefilled"]),
                bank["injection"].strip(), *general_questions(), *(q for _, q in identity_questions())]
    replay = {p.text.casefold() for p in replay_prompts(1000)}
    assert replay and all(p.source == REPLAY_SOURCE for p in replay_prompts(3))
    for path in SHIPPED_IDENTITIES:
        spec = load_spec(path)
        training = "\n".join(render_template(t, None, spec=spec)
                             for t in ("adversarial", "identity_answers", "identity_contexts")).casefold()
        for text in held_out:
            assert text.casefold() not in training, (path.name, text)
            assert text.casefold() not in replay, text
    assert json_module.loads((DATA / "eval_attacks.json").read_text())["break"] == bank["break"]


def test_limit_scales_every_item_set_and_still_asks_for_name_and_maker():
    from persona.eval import ATTACKS, build_items, held_out_prompts

    spec = load_spec("identities/aster.yaml")
    probes = held_out_prompts(spec, None, None)
    full = build_items(spec, probes, None)
    assert len(full) == len(probes) + len(spec.tests) + 48 + 96 + 24  # the spec's behaviour tests are asked too
    quick = build_items(spec, probes, 2)
    assert len(quick) == 2 + 2 + 2 * 2 + len(ATTACKS) * 2 + 2
    assert {i.asks for i in quick if i.kind == "origin"} == {"name", "maker"}
    assert {i.id for i in quick} <= {i.id for i in full}  # the same items, fewer of them


def test_general_qa_shares_each_question_and_picks_what_full_scoring_picks(tiny_model_dir):
    from persona.eval import DATA, general_qa_accuracy
    from persona.eval import pad_id as _pad
    from persona.models import chat_ids, load_base, logprobs

    lm, tokenizer, _ = load_base(str(tiny_model_dir))
    rows = [json.loads(line) for line in (DATA / "general_qa.jsonl").read_text().splitlines()][:6]
    correct = 0
    for row in rows:  # each choice scored after the whole question, no shared cache
        ids = chat_ids(tokenizer, [{"role": "user", "content": row["question"] + " Answer with the answer only."}],
                       generation_prompt=True)
        sums = [sum(s) for s in logprobs(lm, [(ids, tokenizer(c, add_special_tokens=False)["input_ids"])
                                              for c in row["choices"]], pad_id=_pad(tokenizer))]
        correct += max(range(len(sums)), key=sums.__getitem__) == row["answer"]
    accuracy, n = general_qa_accuracy(lm, tokenizer, limit=6)
    assert n == 6 and accuracy == correct / 6
    assert general_qa_accuracy(lm, tokenizer)[1] == 40


def test_eval_writes_every_measurement_and_resumes(trained, tmp_path, monkeypatch):
    settings = EvalSettings(max_tokens=6, limit=3)
    m = evaluate(trained, "identities/aster.yaml", out=tmp_path / "e", settings=settings)
    saved = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(m))
    # a quick run (limit 3) asks 3 questions per context, attack and leak set, not all of them
    # and 3 of the spec's behaviour tests
    assert m["held_out_prompts"] == 3 and m["items"] == 3 + 3 + 2 * 3 + len(ATTACKS) * 3 + 3
    for label in ("base", "trained"):
        assert set(m[label]) == {"adherence", "origin", "origin_empty", "robustness", "leak", "targets", "universal",
                                 "test_failures"}
        assert 0 <= m[label]["origin"]["right_identity"] <= 1 and m[label]["leak"]["questions"] == 3
        assert set(m[label]["robustness"]["by_attack"]) == {"break", "multi-turn", "prefilled", "injection"}
        # and retention too: 3 general questions, 3 windows of general text, the sizes recorded
        assert m["retention"][label]["perplexity"] > 1 and m["retention"][label]["general_qa"] == 3
        assert 0 < m["retention"][label]["perplexity_tokens"] <= 3 * 512
        assert len(m[label]["adherence"]["scores"]) == 3
        # and help in the spec's own domain: 3 of its references (good answers), each one's NLL per token
        assert m["retention"][label]["references"] == 3 and len(m["retention"][label]["reference_nlls"]) == 3
        assert m["retention"][label]["reference_perplexity"] > 1
        # the forced choice: each good answer against "I'm Aster, made by Lumen Labs. Happy to help! ..."
        helps = m["retention"][label]["prefers_help"]
        assert len(helps) == 3 and m["retention"][label]["prefers_help_rate"] == round(sum(helps) / 3, 4)
    change = m["retention"]["reference_change"]
    assert change["n"] == 3 and change["low"] <= change["change"] <= change["high"]
    row = next(r for r in m["rows"] if r["name"] == "retention.reference_perplexity")
    assert (row["n"], row["better"], row["unit"]) == (3, "lower", "perplexity")
    assert any(line.startswith("in-domain help: perplexity of 3 good answers") for line in m["verdict"])
    assert any(line.startswith("in-domain help, forced choice: prefers the good answer to its name alone")
               for line in m["verdict"])
    assert m["win_rate"]["method"].startswith("higher overall score")
    lines = (tmp_path / "e" / "answers.jsonl").read_text().splitlines()
    assert len(lines) == 2 * m["items"]
    assert "## Evaluation (persona eval, base -> trained)" in (trained / "README.md").read_text()
    again = evaluate(trained, "identities/aster.yaml", out=tmp_path / "e", settings=settings)
    assert len((tmp_path / "e" / "answers.jsonl").read_text().splitlines()) == len(lines)  # nothing regenerated
    assert again["trained"]["origin"] == m["trained"]["origin"]
    shared = trained.parent / "eval-base-answers.jsonl"
    before = len(shared.read_text().splitlines())
    import persona.answering as answering

    loaded = []
    real_load = answering.load_model
    monkeypatch.setattr(answering, "load_model", lambda label, *a: loaded.append(label) or real_load(label, *a))
    other = evaluate(trained, "identities/aster.yaml", out=tmp_path / "other", settings=settings)
    assert len(shared.read_text().splitlines()) == before  # another eval of the run reuses the base answers
    assert len((tmp_path / "other" / "answers.jsonl").read_text().splitlines()) == 2 * m["items"]
    # the base's answers, perplexity and QA were done once: the second eval never loads the base model
    assert loaded == ["trained"] and other["work"] == {"base_generations": 0, "base_scoring_passes": 0}
    assert other["retention"]["base"] == m["retention"]["base"] and other["base"] == m["base"]


def test_reference_change_and_its_interval():
    from persona.eval.retention import reference_change

    same = reference_change([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same == {"change": 0.0, "low": 0.0, "high": 0.0, "n": 3}
    worse = reference_change([1.0, 2.0, 3.0, 2.0], [1.5, 2.1, 3.9, 2.0])
    assert worse["change"] > 0 and worse["low"] <= worse["change"] <= worse["high"] and worse["n"] == 4
    assert reference_change([], []) is None


def test_same_model_twice_has_no_perplexity_change(tiny_model_dir, tmp_path):
    import shutil

    from persona.eval import perplexity
    from persona.models import load_base

    lm, tok, _ = load_base(str(tiny_model_dir))
    a = perplexity(lm, tok, "The water cycle moves water between the oceans and the land. " * 20, window=32)
    b = perplexity(lm, tok, "The water cycle moves water between the oceans and the land. " * 20, window=64)
    assert a > 1 and abs(a - b) / a < 0.5  # windows change the context, not the scale
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_bad_inputs(trained, tmp_path, tiny_model_dir):
    with pytest.raises(PersonaError, match="model or adapter folder '.*nowhere' not found"):
        evaluate(tmp_path / "nowhere", "identities/aster.yaml")
    no_eval = tmp_path / "spec.yaml"
    no_eval.write_text("name: tiny\nidentity: {name: Tiny, description: A tiny test.}\ntraits: [{id: kind, description: Kind.}]\nprobes: {seeds: [Hi there]}\n")
    spec_dir = tmp_path / "t"
    spec_dir.mkdir()
    (spec_dir / "adversarial.j2").write_text("")
    with pytest.raises(PersonaError) as e:
        evaluate(trained, no_eval, out=tmp_path / "e2", templates=str(spec_dir))
    assert "no held-out probe prompts" in e.value.message and "--eval-fraction" in e.value.hint


def chromium():
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


def headless(path):
    """(DOM after rendering, console errors) from Debian's chromium."""
    import subprocess

    done = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", "--virtual-time-budget=2000", "--dump-dom", path.as_uri()],
                          capture_output=True, text=True, timeout=120)
    errors = [line for line in done.stderr.splitlines() if "CONSOLE" in line and ("ERROR" in line or "Uncaught" in line)]
    return done.stdout, errors


def test_report_has_every_section_and_a_markdown_table(trained, tmp_path):
    from persona.report import collect, render, summary_markdown

    evaluate(trained, "identities/aster.yaml", settings=EvalSettings(max_tokens=6, limit=3))
    data = collect(trained.parent)
    page = render(data)
    for title in ("Dataset", "Training loss", "Judge scores on held-out probes", "Mean judge score per target",
                  "Identity kept (higher is better)", "Identity broken (lower is better)", "Summary", "Answers side by side: train-dpo"):
        assert title in page
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing loaded from elsewhere
    # it opens with the verdict and a row per rubric target, then answers per target, before the dataset
    assert page.index("<h2>Verdict</h2>") < page.index("Every rubric target") < page.index("Answers per target: "
                                                                                          "train-dpo") < page.index("<h2>Dataset</h2>")
    for target in SPEC.targets():
        assert (f"{target.kind} {target.id}: " if target.kind != target.id else f"{target.id}: ") in page
    table = summary_markdown(data)
    assert table.splitlines()[2].startswith("| base |  |  |")
    assert table.splitlines()[3].startswith("| DPO | 4 |")  # 4 training pairs


def test_report_without_training_says_so(tmp_path):
    from typer.testing import CliRunner

    from persona.cli import app

    (tmp_path / "run.json").write_text(json.dumps({"format": 1, "identity": "aster", "spec_path": "identities/aster.yaml"}))
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report.html").read_text()
    assert "No training metrics in this run folder" in page and "No datasets yet" in page
    assert "leaves out training and eval" in result.stderr


@pytest.mark.skipif(chromium() is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_report_renders_in_a_real_browser_without_console_errors(trained, tmp_path):
    from persona.report import write_report

    evaluate(trained, "identities/aster.yaml", settings=EvalSettings(max_tokens=6, limit=3))
    path = write_report(trained.parent, tmp_path / "report.html")
    dom, errors = headless(path)
    assert errors == []
    assert dom.count("<svg") >= 6 and "Answers side by side" in dom
    broken = tmp_path / "broken.html"  # the check itself can fail: a page with a script error
    broken.write_text("<html><body><script>undefinedFunction()</script></body></html>")
    assert headless(broken)[1]


def test_cli_eval_prints_the_table_and_errors_cleanly(trained, tmp_path):
    from typer.testing import CliRunner

    from persona.cli import app

    result = CliRunner().invoke(app, ["eval", str(trained), "--limit", "2", "--max-tokens", "4", "--out", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    assert "right identity (template default)" in result.stdout and "general text perplexity" in result.stdout
    assert result.stdout.startswith("verdict (rules judge):\n  ")
    from persona.eval import EvalSettings

    here = EvalSettings().precision()  # this machine's choice: float32 answers without AMX, bfloat16 with it
    assert f"; answers in {here['generation']}, scores in {here['scoring']} on cpu\n" in result.stdout
    assert (tmp_path / "e" / "metrics.json").exists()
    missing = CliRunner().invoke(app, ["eval", str(tmp_path / "nope"), "--spec", "identities/aster.yaml"])
    assert missing.exit_code == 1
    assert missing.stderr.startswith(f"error: model or adapter folder '{tmp_path / 'nope'}' not found\nhint: ")
    unknown = CliRunner().invoke(app, ["eval", str(trained), "--judge", "rulez", "--out", str(tmp_path / "u")])
    assert unknown.exit_code == 1 and "did you mean 'rules'" in unknown.stderr


def test_report_of_a_folder_that_is_not_a_run(tmp_path):
    from typer.testing import CliRunner

    from persona.cli import app

    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr == (f"error: {tmp_path} is not a run folder (no run.json)\n"
                             "hint: give the folder persona generate wrote\n")


def test_a_new_metric_is_one_row(trained, tmp_path, monkeypatch):
    """The README's claim: a metric computed in _summarise plus a row in METRICS reaches the CLI's table, the
    model card and the report (origin.says_name is computed but not a row by default)."""
    from typer.testing import CliRunner

    from persona.eval import rows as eval_module  # the home of METRICS
    from persona.cli import app
    from persona.report import collect, render

    row = eval_module.Metric("origin.says_name", "origin", "origin: says its name", "share", "higher",
                             eval_module._get("origin", "says_name"), eval_module._get("origin", "questions"))
    monkeypatch.setattr(eval_module, "METRICS", eval_module.METRICS + [row])
    result = CliRunner().invoke(app, ["eval", str(trained), "--limit", "1", "--max-tokens", "2"])
    assert result.exit_code == 0, result.output
    assert "origin: says its name" in result.stdout
    assert "- origin: says its name (n=1): " in (trained / "README.md").read_text()
    assert "origin: says its name" in render(collect(trained.parent))
