"""persona end to end through a real OpenAI-compatible server that is not persona's own code: `transformers
serve` on the tiny random Llama, with the CLI in subprocesses. The server ignores `n` (one choice per
reply), has no response_format, and works through requests on 2 shared CPU cores: the openai backend must
still return k samples per prompt, and a second `persona generate` must make no request at all.

    PYTHONPATH=. python -m pytest -q -m slow tests/test_transformers_serve.py

Skipped, with the reason, when `transformers serve` cannot start (it needs fastapi and uvicorn:
pip install 'persona-tune[dev]').
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO, free_port, wait_for_health

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 60
SERVE = "import sys; from transformers.cli.transformers import main; sys.argv[0] = 'transformers'; sys.exit(main())"


@pytest.fixture
def sampling_model_dir(tiny_model_dir, tmp_path):
    """The tiny model, set to sample: transformers serve samples only if generation_config.json says so."""
    folder = tmp_path / "tiny-sampling"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**config, "do_sample": True}))
    return folder


@contextlib.contextmanager
def served(folder, log_path):
    """`transformers serve` on `folder`, on a free port: yields its base URL; stopped afterwards. Skips the test,
    with the reason, when it cannot start."""
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"transformers serve needs {', '.join(missing)}: pip install 'persona-tune[dev]'")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-c", SERVE, "serve", str(folder), "--host", "127.0.0.1",
                                   "--port", str(port), "--device", "cpu"], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        problem = wait_for_health(server, port, START_TIMEOUT_S)
        if problem:
            pytest.skip(f"transformers serve {problem}: {log_path.read_text()[-500:]}")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def transformers_server(sampling_model_dir, tmp_path):
    """(base_url, log path) of `transformers serve` on the tiny model, set to sample."""
    with served(sampling_model_dir, tmp_path / "serve.log") as base_url:
        yield base_url, tmp_path / "serve.log"


def persona(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": "EMPTY", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "persona", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=240)


def chat_requests(log_path) -> int:
    """Chat-completion requests the server received, from its access log."""
    return log_path.read_text().count("POST /v1/chat/completions")


def test_generate_judge_and_build_through_transformers_serve(transformers_server, sampling_model_dir, tmp_path):
    base_url, log_path = transformers_server
    run = tmp_path / "run"
    model = str(sampling_model_dir)  # transformers serve takes only the folder it serves as the model name
    generate = ["generate", "identities/aster.yaml", "-b", "openai", "-m", model, "--base-url", base_url,
                "--limit", "2", "-k", "2", "--prompts-per-target", "0", "--replay", "0", "--domain-replay", "0", "--no-demonstrations", "--judge", "rules", "--out", str(run),
                # one request at a time: the server seeds torch's shared generator per request, so only
                # sequential requests show that a repeated seed would repeat the sample
                "--concurrency", "1"]
    result = persona(*generate)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (run / "responses.jsonl").read_text().splitlines()]
    prompts = {r["prompt_id"] for r in rows}
    assert len(prompts) == 2
    # k=2 conforming per prompt although the server ignores n, and the k violating ones
    assert Counter((r["prompt_id"], r["kind"]) for r in rows) == {(p, kind): 2 for p in prompts
                                                                   for kind in ("conforming", "violating")}
    assert {r["backend"] for r in rows} == {"openai"} and {r["model"] for r in rows} == {model}
    for prompt in prompts:  # the second call had its own seed, so the server sampled anew
        texts = [r["text"] for r in rows if r["prompt_id"] == prompt and r["kind"] == "conforming"]
        assert texts[0] != texts[1]
    assert "does not give n choices per request (it returned 1 of the 2 choices asked for)" in result.stderr
    # per prompt: the conforming request takes 2 calls (n=2 gives one choice, then one more), each
    # violating one 1 call: 8 in all, nothing repeated
    assert chat_requests(log_path) == 8
    assert "wrote 8 responses (4 conforming, 4 violating, 0 demonstrations, 0 replay) for 2 prompts" in result.stderr

    again = persona(*generate)  # resume: everything is done, so no request at all
    assert again.returncode == 0, again.stderr
    assert ": 0 backend requests" in again.stderr
    assert chat_requests(log_path) == 8

    judged = persona("judge", str(run), "--judge", "rules")
    assert judged.returncode == 0, judged.stderr
    assert f"judgements in {run}/judgements.jsonl" in judged.stderr
    built = persona("build", str(run))
    assert built.returncode == 0, built.stderr
    # the folders the summary names (the run folder's layout is the run module's business)
    written = re.search(r"datasets written to (\S+)/, (\S+)/ and (\S+)/", built.stderr)
    assert written, built.stderr
    assert all(Path(folder, "train.jsonl").exists() for folder in written.groups())


@pytest.fixture
def greedy_server(tiny_model_dir, tmp_path):
    """`transformers serve` on the tiny model as saved (greedy)."""
    with served(tiny_model_dir, tmp_path / "serve-greedy.log") as base_url:
        yield base_url


def test_persona_test_on_a_served_model_gives_what_it_gives_in_process(greedy_server, tiny_model_dir, tmp_path):
    """The regression gate on a deployed model: `persona test URL SPEC` against `transformers serve` answers the
    spec's behaviour tests as the same model does in process (greedy), so pass and fail agree test by test."""
    served = persona("test", greedy_server, "identities/aster.yaml", "-m", str(tiny_model_dir), "--max-tokens", "12",
                     "--out", str(tmp_path / "served"))
    local = persona("test", str(tiny_model_dir), "identities/aster.yaml", "--max-tokens", "12", "--batch-size", "1",
                    "--out", str(tmp_path / "local"))
    assert served.returncode == 0 and local.returncode == 0, served.stderr + local.stderr
    on_server, here = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("served", "local"))
    assert [r["test"] for r in on_server["tests"]] == [r["test"] for r in here["tests"]]
    same = sum(a["answer"].strip() == b["answer"].strip() for a, b in zip(on_server["tests"], here["tests"]))
    assert same == len(here["tests"]), [(a["answer"], b["answer"]) for a, b in zip(on_server["tests"], here["tests"])]
    assert [r["status"] for r in on_server["tests"]] == [r["status"] for r in here["tests"]]
