"""The `openai` backend against a real HTTP server on 127.0.0.1: replies, retries (429 with Retry-After,
5xx, timeouts, malformed bodies), errors that must not retry, bounded concurrency, exactly n samples from
servers that ignore or cap n, slow local servers that queue, and secrets (also in RunConfig and the CLI)."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
from typer.testing import CliRunner

from openai_server import OpenAIServer
from persona.backends import Request, SamplingParams, load_backend
from persona.config import RunConfig, load_run_config
from persona.errors import PersonaError, SpecError

KEY = "sk-test-secret-0123456789"


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("TEST_API_KEY", KEY)


def backend(server, **options):
    defaults = dict(model="test-model", base_url=server.base_url, api_key_env="TEST_API_KEY",
                    backoff_base=0.01, backoff_max=0.05, timeout=5)
    return load_backend("openai", **{**defaults, **options})


def requests(count: int, **params) -> list[Request]:
    return [Request(f"r{i}", ({"role": "system", "content": "Be Aster."}, {"role": "user", "content": f"question {i}"}),
                    SamplingParams(**params)) for i in range(count)]


def test_replies_carry_every_completion_and_the_request_body_is_complete():
    with OpenAIServer() as server:
        results = list(backend(server).complete(requests(3, n=2, seed=7, stop=("END",), max_tokens=50)))
    assert sorted(r.request.key for r in results) == ["r0", "r1", "r2"]
    first = next(r for r in results if r.request.key == "r1")
    assert [c.text for c in first.completions] == ["reply 0 to: question 1", "reply 1 to: question 1"]
    assert first.completions[0].prompt_tokens == 11 and first.completions[0].completion_tokens == 5
    _, headers, body = server.requests[0]
    assert headers["authorization"] == f"Bearer {KEY}"
    assert body["model"] == "test-model" and body["n"] == 2 and body["seed"] == 7
    assert body["stop"] == ["END"] and body["max_tokens"] == 50 and body["messages"][0]["role"] == "system"


def test_429_honours_retry_after():
    with OpenAIServer(script=[("status", 429, {"Retry-After": "0.4"})]) as server:
        b = backend(server)
        [result] = list(b.complete(requests(1)))
    assert result.completions[0].text == "reply 0 to: question 0"
    assert b.retries == 1
    (t0, _, _), (t1, _, _) = server.requests
    assert t1 - t0 >= 0.4


def test_retry_after_ms_header():
    with OpenAIServer(script=[("status", 503, {"retry-after-ms": "300"})]) as server:
        list(backend(server).complete(requests(1)))
    (t0, _, _), (t1, _, _) = server.requests
    assert t1 - t0 >= 0.3


def test_5xx_timeouts_and_malformed_replies_are_retried():
    script = [("status", 500, {}), ("status", 502, {}), ("sleep", 1.5), ("body", "this is not json"),
              ("json", {"id": "x", "object": "chat.completion", "choices": []})]
    with OpenAIServer(script=script) as server:
        b = backend(server, timeout=0.5, max_retries=6)
        [result] = list(b.complete(requests(1)))
    assert result.completions[0].text == "reply 0 to: question 0"
    assert b.retries == 5
    assert len(server.requests) == 6


def test_gives_up_after_max_retries_with_a_clear_message():
    with OpenAIServer(script=[("status", 500, {})] * 10) as server:
        with pytest.raises(PersonaError) as e:
            list(backend(server, max_retries=2).complete(requests(1)))
    assert e.value.message == f"{server.base_url} answered 500: scripted 500 (gave up after 3 attempts)"
    assert len(server.requests) == 3


def test_unreachable_server():
    with OpenAIServer() as server:
        url = server.base_url
    with pytest.raises(PersonaError) as e:  # the server is gone: nothing listens on that port
        list(load_backend("openai", model="m", base_url=url, api_key_env="TEST_API_KEY", max_retries=1,
                          backoff_base=0.01).complete(requests(1)))
    assert e.value.message == f"cannot reach {url} (gave up after 2 attempts)"
    assert e.value.hint == "check --base-url and that the server is running"


@pytest.mark.parametrize("status,message,hint", [
    (401, "{url} rejected the API key from TEST_API_KEY (401)", "check TEST_API_KEY"),
    (404, "{url} has no model 'test-model' (404: scripted 404)", "check --model and --base-url"),
])
def test_client_errors_fail_at_once_and_never_show_the_key(status, message, hint):
    with OpenAIServer(script=[("status", status, {})]) as server:
        with pytest.raises(PersonaError) as e:
            list(backend(server).complete(requests(1)))
    assert e.value.message == message.format(url=server.base_url) and e.value.hint == hint
    assert len(server.requests) == 1
    assert KEY not in str(e.value)


def test_prompt_too_long_is_not_retried():
    message = "This model's maximum context length is 2048 tokens. However, you requested 3000 tokens."
    with OpenAIServer(script=[("status", 400, {}, message)]) as server:
        with pytest.raises(PersonaError) as e:
            list(backend(server).complete(requests(1)))
    assert e.value.message == f"the prompt is too long for 'test-model': {message}"
    assert e.value.hint == "lower --max-tokens or shorten the spec's examples"
    assert len(server.requests) == 1


def test_the_key_never_reaches_logs(caplog):
    caplog.set_level(logging.INFO, logger="persona")
    with OpenAIServer(script=[("status", 500, {}), ("status", 429, {})]) as server:
        list(backend(server).complete(requests(2)))
    assert "retrying" in caplog.text
    assert KEY not in caplog.text


def test_concurrency_is_bounded_and_used():
    with OpenAIServer(delay=0.1) as server:
        results = list(backend(server, concurrency=4).complete(requests(20)))
    assert len(results) == 20
    assert server.max_in_flight == 4


def test_failure_hands_out_finished_results_first():
    # 5 requests, the third fails for good: the others that finished are still yielded before the error
    with OpenAIServer(script=["ok", "ok", ("status", 400, {}), "ok", "ok"]) as server:
        got = []
        with pytest.raises(PersonaError):
            for result in backend(server, concurrency=1).complete(requests(5)):
                got.append(result.request.key)
    assert got == ["r0", "r1"]


def test_missing_api_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("MY_KEY", raising=False)
    with pytest.raises(PersonaError) as e:
        load_backend("openai", model="m", api_key_env="MY_KEY")
    assert e.value.message == "the environment variable MY_KEY is not set"
    assert e.value.hint.startswith("export MY_KEY=your-key")


def test_model_is_required():
    with pytest.raises(PersonaError, match="needs a model name"):
        load_backend("openai", api_key_env="TEST_API_KEY")


# --- secrets in run configs ------------------------------------------------------------------------------


KEY_LIKE = ["sk-abc123def456ghi789jkl012", "hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh", "0123456789abcdef0123456789abcdef"]


def test_a_key_as_api_key_env_in_a_run_config_file_names_the_line(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"backend: openai\napi_key_env: {KEY_LIKE[1]}\n", encoding="utf-8")
    with pytest.raises(SpecError) as e:
        load_run_config(config)
    assert str(e.value).startswith(f"{config}:2:14: api_key_env: looks like an API key, not the name of an "
                                   f"environment variable (the value is not shown)")
    assert KEY_LIKE[1] not in str(e.value)


def test_a_key_given_as_api_key_env_on_the_command_line_is_neither_printed_nor_saved(tmp_path):
    from persona.cli import app

    result = CliRunner().invoke(app, ["generate", "identities/aster.yaml", "-b", "openai", "-m", "m",
                                      "--api-key-env", KEY_LIKE[0], "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: api_key_env must be the name of an environment variable")
    assert KEY_LIKE[0][:8] not in result.output
    assert not (tmp_path / "run").exists()


def test_run_config_record_has_no_credentials():
    config = RunConfig(backend="openai", model="m", base_url="https://bob:hunter2-secret@llm.example.com:8443/v1",
                       backend_options={"timeout": 120, "api_key": "abc", "auth_token": "t0k3n", "password": "pw",
                                        "proxy": "http://u:p4ss@proxy:3128", "note": KEY_LIKE[0],
                                        "api_key_env": "OTHER_KEY"})
    record = config.to_record()
    assert record["base_url"] == "https://llm.example.com:8443/v1"
    assert record["backend_options"] == {"timeout": 120, "proxy": "http://proxy:3128", "api_key_env": "OTHER_KEY"}
    text = json.dumps(record)
    assert "hunter2" not in text and "p4ss" not in text and KEY_LIKE[0] not in text
    assert {k: v for k, v in record.items() if k not in ("base_url", "backend_options")} == \
        {k: v for k, v in dataclasses.asdict(config).items() if k not in ("base_url", "backend_options")}
    assert RunConfig(**record).to_record() == record  # load_run reads it back
