"""The user's path: one job file, defaults that work, and bad input that gets one clear message and exit 1."""

from __future__ import annotations

import inspect
import json

import pytest
from typer.testing import CliRunner

from persona.cli import app
from persona.config import RunConfig, load_run_config
from persona.secrets import api_key_env_problem
from persona.errors import PersonaError

runner = CliRunner()


# --- defaults that work ----------------------------------------------------------------------------------

def test_train_defaults_to_the_recipe_and_generate_judges_with_rules():
    from persona.pipeline import generate
    from persona.train import train

    assert inspect.signature(train).parameters["method"].default == "sft"  # one training run: SFT
    assert inspect.signature(generate).parameters["judge"].default == "rules"
    result = runner.invoke(app, ["train", "--help"])
    assert "[default: the recipe - on a run folder SFT, then one on-policy DPO round" in " ".join(result.stdout.split())


def test_limit_scales_replay_too():
    assert RunConfig(replay=96, limit=20).replay_count == 20
    assert RunConfig(replay=96).replay_count == 96
    result = runner.invoke(app, ["generate", "identities/brand.yaml", "--limit", "20", "--dry-run"])
    assert result.exit_code == 0
    assert "and 20 replay answers from the target model" in result.stdout
    assert "judge: rules (instant, no model)" in result.stdout


def test_generate_ends_with_the_next_command(tmp_path):
    result = runner.invoke(app, ["generate", "identities/aster.yaml", "-b", "fake", "--limit", "4", "--replay", "0", "--domain-replay", "0",
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.rstrip().endswith(f"next: persona train {tmp_path / 'run'}")
    assert "judged with rules" in result.stderr  # the default judge loads no model


def test_train_uses_the_target_model_generate_recorded(tmp_path, monkeypatch):
    import persona.train as train_module
    from persona.run import RunFolder

    seen = {}

    def fake_train(method, spec, data, card, where, run, settings, output, model, *rest):
        seen["model"] = model
        raise PersonaError("stop here")

    runner.invoke(app, ["generate", "identities/aster.yaml", "-b", "fake", "--limit", "4", "--replay", "0", "--domain-replay", "0",
                        "--out", str(tmp_path / "run"), "--target-model", "my/target"])
    assert RunFolder(tmp_path / "run").info()["config"]["target_model"] == "my/target"
    monkeypatch.setattr(train_module, "_train", fake_train)
    with pytest.raises(PersonaError, match="stop here"):
        train_module.train(tmp_path / "run")
    assert seen["model"] == "my/target"


# --- bad input -------------------------------------------------------------------------------------------

def test_a_misspelt_system_prompt_mode_is_an_error_not_the_text():
    result = runner.invoke(app, ["generate", "identities/brand.yaml", "--system-prompt", "spce", "--dry-run"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: system_prompt 'spce' is not neutral, spec, none or text:...\n"
                                    "hint: did you mean 'spec'?")
    assert RunConfig(system_prompt="text:You are Nova.").system_prompt == "text:You are Nova."


def test_a_run_config_file_names_the_line_of_a_bad_system_prompt(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("k: 1\nsystem_prompt: nuetral\n", encoding="utf-8")
    with pytest.raises(PersonaError) as e:
        load_run_config(config)
    assert e.value.message.startswith(f"{config}:2:16: system_prompt: 'nuetral' is not neutral")
    assert e.value.hint.endswith("fix them and run the command again")


def test_an_old_run_json_with_plain_text_still_loads(tmp_path):
    from persona.pipeline import load_run
    from persona.run import RunFolder

    runner.invoke(app, ["generate", "identities/aster.yaml", "-b", "fake", "--limit", "4", "--replay", "0", "--domain-replay", "0",
                        "--out", str(tmp_path / "run"), "--judge", "none"])
    run = RunFolder(tmp_path / "run")
    run.update(config={**run.info()["config"], "system_prompt": "You are Aster."})
    assert load_run(tmp_path / "run")[1].system_prompt == "text:You are Aster."


def test_options_another_backend_takes_are_refused():
    result = runner.invoke(app, ["generate", "identities/brand.yaml", "-b", "openai", "-m", "x",
                                 "--tensor-parallel-size", "2", "--dry-run"])
    assert result.exit_code == 1
    assert result.stderr == ("error: tensor_parallel_size does not apply to the openai backend\n"
                             "hint: drop it, or pick the backend that takes it: tensor_parallel_size: vllm\n")
    result = runner.invoke(app, ["generate", "identities/brand.yaml", "--concurrency", "8", "--dry-run"])
    assert result.exit_code == 1 and "concurrency does not apply to the hf backend" in result.stderr


@pytest.mark.parametrize("value", ["sk_test_abc", "sk-1234", "hf_abc"])
def test_a_short_key_given_as_api_key_env_is_never_echoed(value, tmp_path):
    assert api_key_env_problem(value) is not None  # "looks like an API key" or "not a variable name"
    result = runner.invoke(app, ["generate", "identities/brand.yaml", "-b", "openai", "-m", "x",
                                 "--api-key-env", value, "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert value not in result.stdout + result.stderr
    assert not (tmp_path / "run").exists()


def test_stats_eval_and_ls_on_folders_that_do_not_exist(tmp_path):
    missing = tmp_path / "nope"
    result = runner.invoke(app, ["stats", str(missing)])
    assert (result.exit_code, result.stderr.splitlines()[0]) == (1, f"error: run folder '{missing}' not found")
    result = runner.invoke(app, ["eval", str(missing)])
    assert (result.exit_code, result.stderr.splitlines()[0]) == (1, f"error: model or adapter folder '{missing}' not found")
    result = runner.invoke(app, ["ls", "--identities", str(missing)])
    assert (result.exit_code, result.stderr.splitlines()[0]) == (1, f"error: identities folder '{missing}' not found")


def test_validate_reports_schema_and_semantic_problems_in_one_pass(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\nidentity: {name: Bad, description: x, maker: y}\ntraits:\n"
                    "  - {id: warm, description: be warm, weight: -1}\n  - {id: warm, description: again}\n"
                    "constraints:\n  - id: c1\n    description: d\n    check: {forbidden_patterns: ['(unclosed']}\n",
                    encoding="utf-8")
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert [line.split(": ")[1] for line in lines] == ["traits[0].weight", "traits[1].id",
                                                       "constraints[0].check.forbidden_patterns[0]"]
    assert "duplicate id 'warm'" in lines[1] and "invalid regular expression" in lines[2]


def test_stats_counts_the_current_set_and_the_superseded(tmp_path):
    base = ["generate", "identities/aster.yaml", "-b", "fake", "--replay", "0", "--domain-replay", "0", "--no-demonstrations",
            "--out", str(tmp_path / "run"), "--judge", "none"]
    assert runner.invoke(app, base + ["--limit", "6"]).exit_code == 0
    assert runner.invoke(app, base + ["--limit", "3"]).exit_code == 0
    result = runner.invoke(app, ["stats", str(tmp_path / "run"), "--json"])
    numbers = json.loads(result.stdout)
    assert numbers["prompts"]["train"] + numbers["prompts"]["eval"] == 3
    assert numbers["superseded"]["prompts"] == 3
    assert sum(numbers["responses"].values()) == 3 * 4
    result = runner.invoke(app, ["stats", str(tmp_path / "run")])
    line = next(line for line in result.stdout.splitlines() if line.startswith("superseded"))
    assert "(3 prompts, " in line and "not counted above" in line


def test_a_build_with_nothing_to_train_on_is_an_error(tmp_path):
    from persona.dataset import BuildReport, nothing_to_train

    judged_nothing = BuildReport(sft={"train": {}}, kto={"train": {"desirable": 0, "undesirable": 0}},
                                 pairs={"train": 0}, unjudged=12)
    error = nothing_to_train(judged_nothing, "llm:judge-model", 12)
    assert error.message == ("nothing to train on: the llm:judge-model judge judged none of the 12 responses "
                             "(all 12 unjudged), so the SFT, DPO and KTO train splits are empty")
    rejected = BuildReport(sft={"train": {}}, kto={"train": {}}, pairs={"train": 0}, unjudged=2,
                           dropped={"margin too small": 5, "tie": 1}, judge="rules")
    assert nothing_to_train(rejected, "rules", 12).message == (
        "nothing to train on: the rules judge accepted no answer of the train split (10 judged, 2 unjudged; "
        "pairs dropped: 5 margin too small; 1 tie)")
    assert nothing_to_train(BuildReport(sft={"train": {"demonstration": 3}}), "rules", 3) is None


# --- the job file ----------------------------------------------------------------------------------------

BAD_JOB = """spec: identities/brand.yaml
generate:
  k: 1
  replya: 24
judge: rulez
train:
  - method: sft
    set: {learnig_rate: 1e-4}
  - {method: dpo, from: sfx}
eval: {judge: rules, max_token: 3}
"""


def test_a_job_file_reports_every_problem_at_its_line(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(BAD_JOB, encoding="utf-8")
    result = runner.invoke(app, ["run", str(job)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: {job}:4:3: generate.replya: unknown key 'replya' (hint: did you mean 'replay'?)",
        f"{job}:5:8: judge: unknown judge 'rulez' (hint: did you mean 'rules'? judges: rules, offline, llm, "
        "reward, reward:PATH or none)",
        f"{job}:8:11: train[0].set.learnig_rate: 'learnig_rate' is not a setting of SFTConfig or LoRA "
        "(hint: did you mean 'learning_rate'?)",
        f"{job}:9:25: train[1].from: 'sfx' is neither an earlier step's method (sft) nor an output folder "
        "(hint: name a method trained above, e.g. from: sft, or a folder of persona train)",
        f"{job}:10:22: eval.max_token: unknown key 'max_token' (hint: did you mean 'max_tokens'?)",
        "hint: 5 problems found; fix them and run the job again"]


def test_the_shipped_demo_job_is_valid():
    from persona.job import load_job

    job = load_job("jobs/demo.yaml")
    assert [step["method"] for step in job.train] == ["sft", "dpo"] and job.judge == "rules"
    assert job.train[1]["from"] == "sft" and job.train[1]["refine"] is True  # the recipe: SFT, then a round
    tutor = load_job("jobs/tutor.yaml")  # the same recipe on the tutor, as a new user would copy it
    assert tutor.spec.endswith("socratic-tutor.yaml") and tutor.train == job.train


def test_a_job_runs_end_to_end_and_a_rerun_skips_what_is_current(tmp_path, tiny_model_dir):
    job = tmp_path / "job.yaml"
    fast = "{max_steps: 2, per_device_train_batch_size: 2, max_length: 64, save_strategy: 'no', r: 4}"
    job.write_text(f"""spec: identities/aster.yaml
generate: {{backend: fake, limit: 4, replay: 0, out: {tmp_path / 'run'}}}
train:
  - {{method: sft, model: {tiny_model_dir}, set: {fast}}}
  - {{method: dpo, from: sft, set: {fast}}}
eval: {{limit: 2, max_tokens: 4}}
""", encoding="utf-8")
    first = runner.invoke(app, ["run", str(job)])
    assert first.exit_code == 0, first.stderr
    assert (tmp_path / "run/train-sft-dpo/eval/metrics.json").is_file()
    assert (tmp_path / "run/report.html").is_file()
    # numbered stages, and training shows its settings and steps as persona train does
    stages = [line.split("]")[0] + "]" for line in first.stderr.splitlines() if line.startswith("[")]
    assert stages == [f"[{n}/6]" for n in range(1, 7)], first.stderr
    assert "[6/6] report" in first.stderr and "training dpo into" in first.stderr
    assert "  step 2/2  loss" in first.stderr
    second = runner.invoke(app, ["run", str(job)])
    assert second.exit_code == 0, second.stderr
    assert second.stderr.count("current: same method, settings, start and data; not retrained") == 2
    assert second.stderr.count("current: same model and eval settings; not rerun") == 2
    job.write_text(job.read_text().replace("eval: {limit: 2", "eval: {limit: 1"), encoding="utf-8")
    third = runner.invoke(app, ["run", str(job)])
    assert third.exit_code == 0, third.stderr
    assert third.stderr.count("not retrained") == 2 and "not rerun" not in third.stderr


def test_an_unchanged_metric_is_neither_better_nor_worse():
    from persona.metrics import MetricRow

    def row(base, trained, better="higher"):
        return MetricRow("retention.qa", "retention", "qa", base, trained, "share", better=better)

    assert row(0.475, 0.475).improved is None
    assert row(0.4, 0.5).improved is True
    assert row(10.0, 11.0, better="lower").improved is False


# --- one home for every setting ----------------------------------------------------------------------------

def test_every_setting_is_declared_once_on_its_dataclass_field():
    """generate's and build's options are built from RunConfig's and BuildSettings' fields: each field with a
    command-line option is there under its own name, with the field's help text and default; cli.py repeats
    none of those defaults."""
    import re
    from dataclasses import fields
    from pathlib import Path

    from persona.config import BuildSettings
    from persona.options import flags_of, help_text

    def flat(text: str) -> str:
        return " ".join(text.split())

    for command, classes in (("generate", (RunConfig, BuildSettings)), ("build", (BuildSettings,))):
        shown = flat(runner.invoke(app, [command, "--help"], env={"COLUMNS": "400"}).stdout)
        for cls in classes:
            for f in fields(cls):
                if not f.metadata.get("cli") or f.name == "templates":
                    continue
                assert flags_of(f)[0] in shown, (command, f.name)  # --field-name, or the field's own flag
                assert flat(help_text(f)) in shown, (command, f.name)
    source = Path("persona/cli.py").read_text(encoding="utf-8")
    for retyped in ("[default: 192]", "[default: 96]", "[default: 2]", "[default: targeted]", "margin: MarginOption = 2.0"):
        assert retyped not in source, retyped
    assert not re.search(r"def generate\([^)]*\bk: Annotated", source, re.S)


def test_a_run_config_file_takes_the_judge_and_build_keys(tmp_path):
    from persona.config import load_generate_config

    good = tmp_path / "run.yaml"
    good.write_text("backend: fake\nlimit: 2\njudge: rules\nbuild: {margin: 3.5, license: mit}\npairwise: false\n")
    file = load_generate_config(good)
    assert file.judge == "rules" and not file.pairwise
    assert file.build_settings().margin == 3.5 and file.build_settings({"margin": 1.0}).margin == 1.0  # flags win
    assert file.run_config().limit == 2 and file.run_config({"limit": 3}).limit == 3
    result = runner.invoke(app, ["generate", "identities/aster.yaml", "-c", str(good), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.stderr
    card = (tmp_path / "run" / "datasets" / "dpo" / "README.md").read_text()
    assert "mit" in card
    bad = tmp_path / "bad.yaml"
    bad.write_text("backend: fake\nbuild:\n  margn: 3\n")
    result = runner.invoke(app, ["generate", "identities/aster.yaml", "-c", str(bad)])
    assert result.exit_code == 1 and f"{bad}:3:" in result.stderr and "margin" in result.stderr
    assert "run the command again" in result.stderr and "persona validate" not in result.stderr


def test_config_files_name_the_line_of_every_problem_and_the_command_to_rerun(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("k: [1\n")
    result = runner.invoke(app, ["generate", "identities/aster.yaml", "-c", str(broken)])
    assert result.exit_code == 1 and f"{broken}:2:" in result.stderr
    assert "run the command again" in result.stderr and "persona validate" not in result.stderr
    training = tmp_path / "train.yaml"
    training.write_text("learning_rate: 1.0e-4\nlerning_rate: 2\n")
    result = runner.invoke(app, ["train", "runs/none-such", "-c", str(training)])
    assert result.exit_code == 1 and "not found" in result.stderr  # the dataset first: nothing to check against
    from persona.methods import resolve_settings

    with pytest.raises(PersonaError) as raised:
        resolve_settings("sft", training, {}, {})
    assert f"{training}:2:1" in raised.value.message and "did you mean 'learning_rate'" in raised.value.message
    assert "run the command again" in raised.value.hint


def test_the_settings_page_is_the_dataclass_fields():
    from pathlib import Path

    from persona.settings_page import settings_doc

    assert Path("docs/settings.md").read_text(encoding="utf-8") == settings_doc(), \
        "docs/settings.md is stale: python -m persona.settings_page > docs/settings.md"


def test_the_job_file_and_the_eval_options_come_from_the_same_fields(tmp_path):
    from dataclasses import fields

    from persona.eval import EvalSettings
    from persona.job import _schema, load_job

    schema = _schema()["properties"]
    assert set(schema["eval"]["properties"]) == {f.name for f in fields(EvalSettings)}
    shown = " ".join(runner.invoke(app, ["eval", "--help"], env={"COLUMNS": "400"}).stdout.split())
    for name in ("--baseline", "--max-tokens", "--limit", "--judge", "--backend", "-b"):
        assert name in shown
    job = tmp_path / "job.yaml"
    job.write_text("spec: identities/aster.yaml\neval: {baseline: prompts}\n")
    with pytest.raises(PersonaError) as raised:
        load_job(job)
    assert f"{job}:2:" in raised.value.message and "prompt" in raised.value.message
