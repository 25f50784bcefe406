"""`persona generate` from the command line: bad input gets one clear message and a non-zero exit, a real
run against an OpenAI-compatible server on 127.0.0.1 works and keeps the API key out of everything."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from conftest import REPO
from openai_server import OpenAIServer
from persona.cli import app

runner = CliRunner()
KEY = "sk-cli-secret-42"


def test_unknown_backend_suggests_one(tmp_path):
    result = runner.invoke(app, ["generate", "identities/aster.yaml", "--backend", "opnai", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr == "error: unknown backend 'opnai'\nhint: did you mean 'openai'? backends: hf, openai, vllm\n"


def test_missing_api_key_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE_KEY", raising=False)
    result = runner.invoke(app, ["generate", "identities/aster.yaml", "-b", "openai", "-m", "x",
                                 "--api-key-env", "NOPE_KEY", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: the environment variable NOPE_KEY is not set\nhint: export NOPE_KEY=")


def test_model_folder_not_found(tmp_path):
    result = runner.invoke(app, ["generate", "identities/aster.yaml", "-m", str(tmp_path / "missing-model"),
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert f"error: model folder '{tmp_path / 'missing-model'}' not found" in result.stderr


def test_invalid_spec_gets_the_same_messages_as_validate():
    validate = runner.invoke(app, ["validate", "tests/data/broken/unknown-keys.yaml"])
    result = runner.invoke(app, ["generate", "tests/data/broken/unknown-keys.yaml"])
    assert result.exit_code == 1
    problems = validate.stdout.strip().splitlines()
    assert result.stderr.splitlines()[0] == "error: " + problems[0]
    assert result.stderr.splitlines()[1:len(problems)] == problems[1:]


def test_run_config_errors_name_file_line_and_suggest(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("backend: fake\nconcurency: 4\nk: two\n", encoding="utf-8")
    result = runner.invoke(app, ["generate", "identities/aster.yaml", "--config", str(config)])
    assert result.exit_code == 1
    assert f"{config}:2:1: concurency: unknown key 'concurency' (hint: did you mean 'concurrency'?)" in result.stderr
    assert f"{config}:3:4: k: expected a whole number, got text ('two')" in result.stderr


def test_run_config_checks_the_conforming_for_demonstrated_switch(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("backend: fake\nconforming_for_demonstrated: maybe\n", encoding="utf-8")
    result = runner.invoke(app, ["generate", "identities/aster.yaml", "--config", str(config), "--dry-run"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (f"{config}:2:30: conforming_for_demonstrated: expected true or false, got text ('maybe') "
            "(hint: write true or false here)") in result.stderr
    config.write_text("backend: fake\nconforming_for_demonstrated: false\n", encoding="utf-8")
    result = runner.invoke(app, ["generate", "identities/aster.yaml", "--config", str(config), "--dry-run"])
    assert result.exit_code == 0 and "no conforming request for prompts that have demonstrations" in result.stdout


def test_dry_run_calls_nothing_and_writes_nothing(tmp_path):
    result = runner.invoke(app, ["generate", "identities/brand.yaml", "--dry-run", "-b", "openai", "-m", "m",
                                 "--api-key-env", "UNSET_FOR_DRY_RUN", "--out", str(tmp_path / "run"), "--limit", "20"])
    assert result.exit_code == 0, result.output
    assert "You are Nova, an AI assistant made by Northwind Bank." in result.stdout
    assert "-> at most 20 after --limit/dedup" in result.stdout
    assert ("requests: 14 probe-synthesis + at most 80 response requests (1 conforming with n=2 and 2 violating "
            "per prompt, and 20 replay answers from the target model)") in result.stdout
    assert not (tmp_path / "run").exists()


def test_config_file_flags_override_it(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("backend: fake\nk: 3\nlimit: 4\nreplay: 0\ndemonstrations: false\nbackend_options: {delay: 0}\n",
                      encoding="utf-8")
    result = runner.invoke(app, ["generate", "identities/aster.yaml", "-c", str(config), "-k", "1",
                                 "--out", str(tmp_path / "run"), "--judge", "none"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "run/responses.jsonl").read_text().splitlines()]
    assert len(rows) == 4 * 2  # limit 4 from the file, k=1 from the flag
    assert result.stderr.strip().splitlines()[-2].startswith(
        f"wrote 8 responses (4 conforming, 4 violating, 0 demonstrations, 0 replay) for 4 prompts (3 train, 1 eval) "
        f"to {tmp_path / 'run'}/ in ")


def test_ctrl_c_keeps_finished_work_and_says_how_to_resume(tmp_path):
    args = ["generate", "identities/aster.yaml", "-b", "fake", "--limit", "6", "--replay", "0", "--domain-replay", "0", "--no-demonstrations",
            "--out", str(tmp_path / "run"),
            "--judge", "none"]
    result = runner.invoke(app, args + ["-o", "interrupt_after=20"])
    assert result.exit_code == 130
    assert "interrupted: finished records are kept; run the same command again to resume" in result.stderr
    kept = len((tmp_path / "run/responses.jsonl").read_text().splitlines())
    assert kept > 0
    result = runner.invoke(app, args)
    assert result.exit_code == 0
    assert len((tmp_path / "run/responses.jsonl").read_text().splitlines()) == 6 * 4


def test_openai_end_to_end_in_a_subprocess_keeps_the_key_secret(tmp_path):
    with OpenAIServer(script=[("status", 429, {"Retry-After": "0.1"}), ("status", 500, {})]) as server:
        env = {**os.environ, "PYTHONPATH": str(REPO), "CI_TEST_KEY": KEY, "PERSONA_VERBOSE": "1"}
        result = subprocess.run(
            [sys.executable, "-m", "persona", "generate", "identities/brand.yaml", "-b", "openai", "-m", "test-model",
             "--replay", "0", "--domain-replay", "0", "--no-demonstrations",
             "--base-url", server.base_url, "--api-key-env", "CI_TEST_KEY", "--limit", "5", "--out",
             str(tmp_path / "run"), "-o", "backoff_base=0.01", "--judge", "rules"],
            capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "retrying" in result.stderr  # the injected 429 and 500 were retried
    assert "wrote 20 responses (10 conforming, 10 violating, 0 demonstrations, 0 replay) for 5 prompts" in result.stderr
    assert "judged with rules: 20 new judgements, 0 responses unjudged" in result.stderr
    rows = [json.loads(line) for line in (tmp_path / "run/responses.jsonl").read_text().splitlines()]
    assert {r["backend"] for r in rows} == {"openai"} and {r["model"] for r in rows} == {"test-model"}
    everything = result.stdout + result.stderr + "".join(
        p.read_text() for p in (tmp_path / "run").rglob("*") if p.is_file())
    assert KEY not in everything


def test_unreachable_server_keeps_finished_records(tmp_path, monkeypatch):
    monkeypatch.setenv("CI_TEST_KEY", KEY)
    args = ["generate", "identities/aster.yaml", "-b", "openai", "-m", "test-model", "--api-key-env", "CI_TEST_KEY",
            "--replay", "0", "--domain-replay", "0", "--no-demonstrations",
            "--limit", "4", "--out", str(tmp_path / "run"), "--concurrency", "1", "-o", "backoff_base=0.01",
            "-o", "max_retries=1", "--judge", "none"]
    with OpenAIServer(script=["ok"] * 12 + [("status", 503, {})] * 100) as server:  # 7 synthesis + 5 responses
        result = runner.invoke(app, args + ["--base-url", server.base_url])
    assert result.exit_code == 1
    assert "answered 503: scripted 503 (gave up after 2 attempts)" in result.stderr
    kept = (tmp_path / "run/responses.jsonl").read_text().splitlines()
    assert len(kept) > 0
    with OpenAIServer() as server:  # the server is back: the run resumes and completes
        result = runner.invoke(app, args + ["--base-url", server.base_url])
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in (tmp_path / "run/responses.jsonl").read_text().splitlines()]
    assert len(rows) == len({r["id"] for r in rows}) == 4 * 4


def test_progress_lines_in_a_log_file(tmp_path):
    """stderr to a file (a log, CI): periodic one-line progress with count, rate and ETA, not silence; stdout
    carries no progress."""
    log = tmp_path / "log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PERSONA_PROGRESS_SECONDS": "0.2"}
    with open(log, "w") as err:
        out = subprocess.run([sys.executable, "-m", "persona", "generate", "identities/aster.yaml", "-b", "fake",
                              "--limit", "4", "--replay", "0", "--domain-replay", "0", "--no-demonstrations", "-o", "delay=0.05",
                              "--out", str(tmp_path / "run"), "--judge", "rules"],
                             stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO, env=env, timeout=120)
    assert out.returncode == 0 and "responses" not in out.stdout
    lines = [line for line in log.read_text().splitlines() if line.startswith("responses ")]
    assert len(lines) >= 3, log.read_text()  # the start, at least one while running, the end
    import re

    total = re.match(r"responses \d+/(\d+) ", lines[0]).group(1)
    assert lines[-1].startswith(f"responses {total}/{total} ") and "elapsed" in lines[-1] and "eta -" in lines[-1]
    assert any("eta " in line and "eta -" not in line for line in lines[1:-1])
