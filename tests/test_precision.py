"""Compute precision (persona.precision): the one decision of bf16 vs fp32 per device, read from the CPU's flags
(simulated here with PERSONA_CPU_FLAGS), the `dtype` setting that overrides it in generate, train, eval and the
offline judge, what each records, and the bad values."""

from __future__ import annotations

import json
import logging

import pytest

from persona import precision
from persona.errors import PersonaError
from tests.test_train import run_dir  # noqa: F401  (the fixture: a run folder with built datasets)
from persona.precision import compute_dtype, cpu_flags, normalize_dtype, scoring_dtype

AMX = "fpu avx512f avx512_bf16 amx_bf16 amx_tile"
AVX512_ONLY = "fpu avx512f avx512_bf16"
NONE = "fpu sse4_2 avx2"


@pytest.fixture
def flags(monkeypatch):
    def set_flags(value: str) -> None:
        monkeypatch.setenv("PERSONA_CPU_FLAGS", value)
        precision._warned.clear()  # each simulated CPU warns afresh

    return set_flags


def test_the_cpu_flags_decide_and_a_setting_overrides(flags, caplog):
    flags(AMX)
    assert compute_dtype("cpu") == "bfloat16" and compute_dtype("cpu", "fp32") == "float32"
    assert scoring_dtype("cpu") == "bfloat16" and scoring_dtype("cpu", "fp32") == "float32"
    flags(AVX512_ONLY)  # measured slower in bf16 than fp32 (no AMX): auto stays fp32
    assert compute_dtype("cpu") == "float32" and compute_dtype("cpu", "auto") == "float32"
    with caplog.at_level(logging.WARNING, logger="persona"):
        assert compute_dtype("cpu", "bf16") == "bfloat16"
    assert "avx512_bf16 but no AMX: bf16 ran at 0.55x fp32 for a matmul and 0.77x for generation" in caplog.text
    flags(NONE)  # a CPU without the flags: fp32, as before bf16 existed
    assert compute_dtype("cpu") == "float32"
    with pytest.raises(PersonaError) as e:
        compute_dtype("cpu", "bfloat16")
    assert e.value.message == ("dtype bfloat16: this CPU has no bf16 instructions (neither amx_bf16 nor avx512_bf16 "
                               "in PERSONA_CPU_FLAGS), so bf16 would be emulated, slower than fp32")
    assert e.value.hint == "use dtype fp32, or auto (fp32 on this CPU)"
    with pytest.raises(PersonaError, match="float16 on CPU"):
        compute_dtype("cpu", "fp16")


def test_unknown_dtypes_get_did_you_mean():
    assert normalize_dtype("BF16") == "bfloat16" and normalize_dtype("torch.float32") == "float32"
    assert normalize_dtype("auto") is None and normalize_dtype(None) is None
    with pytest.raises(PersonaError) as e:
        normalize_dtype("bf61")
    assert (e.value.message, e.value.hint) == ("unknown dtype 'bf61'", "did you mean 'bf16'? dtype: auto, bf16, "
                                                                        "fp32 or fp16")


def test_the_flags_are_read_from_proc_cpuinfo(monkeypatch):
    from pathlib import Path

    monkeypatch.delenv("PERSONA_CPU_FLAGS", raising=False)
    info = Path("/proc/cpuinfo")
    if not info.is_file():
        pytest.skip("no /proc/cpuinfo on this system")
    line = next(x for x in info.read_text().splitlines() if x.startswith(("flags", "Features")))
    assert cpu_flags() == set(line.partition(":")[2].split()) and cpu_flags()
    monkeypatch.setenv("PERSONA_CPU_FLAGS", "")
    assert cpu_flags() == set()


def test_the_hf_backend_generates_in_the_chosen_dtype(flags, tiny_model_dir):
    import torch

    from persona.backends import Request, SamplingParams, load_backend

    torch.set_num_threads(1)
    request = Request("r", ({"role": "user", "content": "Who are you?"},), SamplingParams(temperature=0, max_tokens=5))
    texts = {}
    for value, expected in ((AMX, torch.bfloat16), (NONE, torch.float32)):
        flags(value)
        backend = load_backend("hf", model=str(tiny_model_dir))
        assert backend.dtype == str(expected).removeprefix("torch.")
        assert {p.dtype for p in backend.lm.parameters()} == {expected}
        [result] = backend.complete([request])
        texts[backend.dtype] = result.completions[0].text
        assert result.completions[0].completion_tokens > 0
    flags(NONE)
    forced = load_backend("hf", model=str(tiny_model_dir), dtype="fp32")
    assert forced.dtype == "float32"
    with pytest.raises(PersonaError, match="no bf16 instructions"):
        load_backend("hf", model=str(tiny_model_dir), dtype="bf16")


def test_from_loaded_casts_the_model_in_place(flags, tiny_model_dir):
    import torch

    from persona.backends.hf import HFBackend
    from persona.models import load_base

    flags(AMX)
    lm, tokenizer, name = load_base(str(tiny_model_dir))
    assert next(lm.parameters()).dtype == torch.float32  # load_base loads fp32 (what training starts from)
    backend = HFBackend.from_loaded(lm, tokenizer, name)
    assert backend.dtype == "bfloat16" and next(lm.parameters()).dtype == torch.bfloat16


def test_run_config_dtype_one_setting_with_file_line_col(tmp_path, flags):
    from persona.config import load_run_config
    from persona.errors import SpecError

    config = load_run_config(None, {"backend_options": {"dtype": "bf16", "timeout": 3}})
    assert config.dtype == "bfloat16" and config.backend_options == {"timeout": 3}  # -o dtype= is dtype
    assert config.backend_kwargs()["dtype"] == "bfloat16"
    assert "dtype" not in load_run_config(None, {"dtype": "auto"}).backend_kwargs()
    path = tmp_path / "run.yaml"
    path.write_text("k: 1\ndtype: bf61\n")
    with pytest.raises(SpecError) as e:
        load_run_config(path)
    assert e.value.problems[0].format().startswith(f"{path}:2:8: dtype: 'bf61' is not one of 'auto', 'bf16'")
    assert "did you mean 'bf16'?" in str(e.value.problems[0])
    with pytest.raises(PersonaError, match="unknown backend_options.dtype 'float33'"):
        load_run_config(None, {"backend_options": {"dtype": "float33"}})


def test_generate_records_the_dtype_and_the_offline_judge_scores_in_it(tmp_path, flags, tiny_model_dir):
    from persona.config import RunConfig
    from persona.judges.offline import OfflineJudge
    from persona.pipeline import generate, judge_options_for_run
    from persona.spec import load_spec

    flags(AMX)
    fp32 = OfflineJudge(model=str(tiny_model_dir), dtype="fp32")
    bf16 = OfflineJudge(model=str(tiny_model_dir))  # auto: bf16 with AMX
    assert fp32.dtype == "float32" and not fp32.fingerprint.endswith("float32")  # the keys of before
    assert bf16.dtype == "bfloat16" and bf16.fingerprint == fp32.fingerprint + "|bfloat16"
    assert judge_options_for_run("offline", {}, RunConfig(dtype="bf16")) == {"dtype": "bfloat16"}
    assert judge_options_for_run("rules", {}, RunConfig(dtype="bf16")) == {}
    assert judge_options_for_run("offline", None, RunConfig()) is None
    config = RunConfig(backend="hf", model=str(tiny_model_dir), limit=2, k=1, prompts_per_target=0, replay=1,
                       max_tokens=4, out=str(tmp_path / "run"), demonstrations=False)
    summary = generate(load_spec("identities/aster.yaml"), config, judge=None)
    assert summary.precision == {"generator": "bfloat16 on cpu (AMX)", "target": "bfloat16 on cpu (AMX)"}
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["precision"] == {"generator": "bfloat16", "target": "bfloat16"}
    assert info["config"]["dtype"] is None  # auto, as asked


def test_training_settings_follow_the_flags_and_the_dtype_setting(flags):
    from persona.methods import resolve_settings

    flags(NONE)
    assert resolve_settings("sft", None, {}, {})["bf16"] is False
    with pytest.raises(PersonaError, match="no bf16 instructions"):
        resolve_settings("sft", None, {"bf16": True}, {})
    flags(AMX)
    assert resolve_settings("sft", None, {}, {})["dtype"] == "bfloat16"
    assert resolve_settings("sft", None, {"dtype": "fp32"}, {})["bf16"] is False
    assert resolve_settings("sft", None, {"bf16": False}, {})["dtype"] == "float32"
    with pytest.raises(PersonaError, match="unknown dtype 'bf61'"):
        resolve_settings("sft", None, {"dtype": "bf61"}, {})


def test_bf16_training_runs_under_autocast_and_keeps_lora_in_fp32(flags, run_dir, tiny_model_dir, tmp_path,
                                                                  monkeypatch):
    import torch
    from safetensors.torch import load_file
    from trl.trainer import utils

    from persona.train import train

    torch.set_num_threads(1)
    autocast = []  # the autocast state the fused LM head ran under, one entry per call

    def spy(*args):
        on = torch.is_autocast_enabled("cpu")
        autocast.append(torch.get_autocast_dtype("cpu") if on else torch.float32)
        return real_apply(*args)

    real_apply = utils._ChunkedLogProbFunction.apply
    monkeypatch.setattr(utils._ChunkedLogProbFunction, "apply", spy)
    fast = {"max_steps": 3, "per_device_train_batch_size": 4, "max_length": 64, "save_strategy": "no", "r": 4}
    results = {}
    for value in (NONE, AMX):
        flags(value)
        autocast.clear()
        out = tmp_path / value.split()[-1]
        results[value] = train(run_dir, "sft", model=str(tiny_model_dir), overrides=fast, output_dir=out)
        assert autocast and set(autocast) == ({torch.bfloat16} if value == AMX else {torch.float32})  # matmuls ran in that dtype
        assert {t.dtype for t in load_file(out / "adapter_model.safetensors").values()} == {torch.float32}
        assert results[value].changed_parameters > 0
    bf16 = results[AMX]
    assert bf16.settings["bf16"] is True and bf16.settings["dtype"] == "bfloat16"
    card = (tmp_path / "amx_tile" / "README.md").read_text()
    assert "- precision: bfloat16 autocast, weights and optimizer state float32 (cpu)" in card
    assert "- precision: float32 (cpu)" in (tmp_path / "avx2" / "README.md").read_text()
    assert "dtype: bfloat16" in (tmp_path / "amx_tile" / "persona_train.yaml").read_text()
    losses = [[m["loss"] for m in r.metrics if "loss" in m] for r in results.values()]
    assert losses[1][0] == pytest.approx(losses[0][0], rel=0.05)  # the same first step, within bf16's rounding


def test_eval_answers_and_scores_in_the_compute_dtype_and_keeps_them_apart(flags):
    from persona.eval import EvalSettings
    from persona.eval import base_key as _base_key
    from persona.eval.answers import requests_for as _requests
    from persona.eval import EvalItem

    items = [EvalItem("a", "origin", ({"role": "user", "content": "Who are you?"},), asks="name")]
    flags(NONE)
    fp32_keys = [r.key for r in _requests("m", items, EvalSettings())[0]]
    from persona.store import input_key

    params = {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": 64, "seed": 0, "stop": []}
    assert fp32_keys == [input_key("m", 1.1, "a", items[0].messages, params)]  # unchanged from before bf16
    assert EvalSettings().precision() == {"device": "cpu", "generation": "float32", "scoring": "float32"}
    flags(AMX)
    assert EvalSettings().precision() == {"device": "cpu", "generation": "bfloat16", "scoring": "bfloat16"}
    assert [r.key for r in _requests("m", items, EvalSettings())[0]] != fp32_keys
    assert _base_key("m", EvalSettings()) != _base_key("m", EvalSettings(dtype="fp32"))  # bf16 scores apart
    assert _base_key("m", EvalSettings()) != _base_key("m", EvalSettings(limit=2))  # quick scores apart
    assert EvalSettings(dtype="float32").precision()["generation"] == "float32"


def test_cli_rejects_bad_dtypes_without_a_traceback(flags, tmp_path, run_dir):
    from typer.testing import CliRunner

    from persona.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["generate", "identities/brand.yaml", "--dry-run", "--dtype", "bf61"])
    assert result.exit_code == 1 and "error: unknown dtype 'bf61'" in result.stderr
    assert "hint: did you mean 'bf16'?" in result.stderr and "Traceback" not in result.stderr
    result = runner.invoke(app, ["generate", "identities/brand.yaml", "--dry-run", "-o", "dtype=fp23"])
    assert result.exit_code == 1 and "unknown backend_options.dtype 'fp23'" in result.stderr
    flags(NONE)
    result = runner.invoke(app, ["generate", "identities/brand.yaml", "--dry-run", "--dtype", "bf16"])
    assert result.exit_code == 1 and "no bf16 instructions" in result.stderr
    result = runner.invoke(app, ["generate", "identities/brand.yaml", "--dry-run"])
    assert result.exit_code == 0 and "precision: float32 on cpu (no bf16 instructions)" in result.stdout
    flags(AMX)
    result = runner.invoke(app, ["generate", "identities/brand.yaml", "--dry-run"])
    assert "precision: bfloat16 on cpu (AMX)" in result.stdout
    result = runner.invoke(app, ["eval", str(tmp_path), "--spec", "identities/brand.yaml", "--dtype", "bf61"])
    assert result.exit_code == 1 and "unknown dtype 'bf61'" in result.stderr
    result = runner.invoke(app, ["train", str(run_dir), "--method", "sft", "--set", "dtype=bf61",
                                 "--output-dir", str(tmp_path / "t")])
    assert result.exit_code == 1 and "unknown dtype 'bf61'" in result.stderr and "Traceback" not in result.stderr
    assert "did you mean 'bf16'?" in result.stderr and not (tmp_path / "t").exists()


def test_resume_keeps_the_checkpoints_precision(flags, run_dir, tiny_model_dir, tmp_path):
    from persona.train import train

    steps = {"max_steps": 2, "per_device_train_batch_size": 4, "max_length": 64, "save_strategy": "steps",
             "save_steps": 1, "r": 4}
    flags(NONE)
    train(run_dir, "sft", model=str(tiny_model_dir), overrides=steps, output_dir=tmp_path / "r")
    flags(AMX)  # the same output resumed where auto picks bf16: refused, nothing lost
    with pytest.raises(PersonaError, match="trained in float32, this run would train in bfloat16") as e:
        train(run_dir, "sft", model=str(tiny_model_dir), overrides={**steps, "max_steps": 3},
              output_dir=tmp_path / "r", resume=True)
    assert "--set dtype=float32" in e.value.hint and (tmp_path / "r" / "checkpoint-2").is_dir()
    result = train(run_dir, "sft", model=str(tiny_model_dir), overrides={**steps, "max_steps": 3, "dtype": "fp32"},
                   output_dir=tmp_path / "r", resume=True)
    assert [m["step"] for m in result.metrics if "loss" in m] == [3] and result.settings["dtype"] == "float32"
