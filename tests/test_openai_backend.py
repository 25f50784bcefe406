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
from persona.backends.openai_api import is_local_url
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


# --- exactly n samples -------------------------------------------------------------------------------------


def test_a_server_that_ignores_n_still_gives_n_samples_with_distinct_seeds():
    with OpenAIServer(max_n=1) as server:  # like transformers serve: always one choice
        b = backend(server, concurrency=1)
        results = list(b.complete(requests(3, n=3, seed=5)))
    assert [len(r.completions) for r in results] == [3, 3, 3]
    # the first request finds out (n=3 gives 1, then asks for the rest); later ones ask for one at a time,
    # so every request the server got gave a sample
    assert [body["n"] for _, _, body in server.requests] == [3, 1, 1] + [1, 1, 1] * 2
    assert [body["seed"] for _, _, body in server.requests] == [5, 6, 7] * 3
    assert b.n_limit == 1 and b.calls == len(server.requests) == 9 and b.retries == 0


def test_a_server_that_caps_n_is_asked_for_the_rest_and_extra_choices_are_cut():
    with OpenAIServer(max_n=2) as server:
        [result] = list(backend(server).complete(requests(1, n=5, seed=0)))
    assert len(result.completions) == 5
    assert [(body["n"], body["seed"]) for _, _, body in server.requests] == [(5, 0), (2, 2), (1, 4)]
    too_many = {"choices": [{"message": {"content": f"c{i}"}, "finish_reason": "stop"} for i in range(3)]}
    with OpenAIServer(script=[("json", too_many)]) as server:
        [result] = list(backend(server).complete(requests(1, n=2)))
    assert [c.text for c in result.completions] == ["c0", "c1"] and len(server.requests) == 1


@pytest.mark.parametrize("status,message", [
    (500, "Only one completion choice is allowed"),  # llama.cpp before n_cmpl
    (400, "Illegal param: only one completion choice is allowed"),
])
def test_a_server_that_refuses_n_is_asked_one_sample_at_a_time(status, message, caplog):
    with OpenAIServer(script=[("status", status, {}, message)], max_n=1) as server:
        b = backend(server, concurrency=1)
        results = list(b.complete(requests(2, n=2, seed=0)))
    assert [len(r.completions) for r in results] == [2, 2]
    assert [(body["n"], body["seed"]) for _, _, body in server.requests] == [(2, 0), (1, 0), (1, 1), (1, 0), (1, 1)]
    assert b.n_limit == 1 and b.retries == 0
    assert f"(it rejected n=2: {message}): asking for at most 1 per request from now on" in caplog.text


# --- slow local servers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("url,local", [
    ("http://127.0.0.1:8000/v1", True), ("http://localhost:11434/v1", True), ("http://[::1]:8080/v1", True),
    ("http://192.168.1.20:8000/v1", True), ("http://10.0.0.5/v1", True), ("http://vllm:8000/v1", True),
    ("http://host.docker.internal:11434/v1", True), ("http://user:pw@localhost:8000/v1", True),
    ("https://api.openai.com/v1", False), ("https://8.8.8.8/v1", False), ("https://api.together.xyz/v1", False),
])
def test_local_servers_are_recognised(url, local):
    assert is_local_url(url) is local


def test_local_servers_get_a_long_timeout_and_few_requests_in_flight():
    local = load_backend("openai", model="m", base_url="http://127.0.0.1:8000/v1", api_key_env="TEST_API_KEY")
    remote = load_backend("openai", model="m", base_url="https://api.example.com/v1", api_key_env="TEST_API_KEY")
    assert (local.concurrency, local.timeout, local.timeout_retries) == (4, 600.0, 1)
    assert (remote.concurrency, remote.timeout, remote.timeout_retries) == (32, 60.0, 6)
    chosen = load_backend("openai", model="m", base_url="http://127.0.0.1:8000/v1", api_key_env="TEST_API_KEY",
                          concurrency=64, timeout=30, timeout_retries=3)
    assert (chosen.concurrency, chosen.timeout, chosen.timeout_retries) == (64, 30.0, 3)


def test_a_slow_local_server_that_queues_gets_no_repeated_requests():
    # one request at a time, 0.25 s each: with 8 in flight the last waits 2 s, twice the timeout. The server
    # answers someone every 0.25 s, so nobody is given up on and nothing is sent twice.
    with OpenAIServer(workers=1, delay=0.25) as server:
        b = backend(server, concurrency=8, timeout=1.0)
        results = list(b.complete(requests(8)))
    assert len(results) == 8
    assert len(server.requests) == 8 and b.retries == 0  # received == sent
    assert server.max_in_flight == 8


def test_a_stalled_local_server_gets_one_retry_and_fewer_requests_in_flight():
    # the server works on one request at a time and the first takes 3 s: the request times out, is retried
    # once, waits behind the abandoned one (which the server still works on) and times out again: give up
    with OpenAIServer(workers=1, script=[("sleep", 3)]) as server:
        b = backend(server, timeout=0.3, max_retries=6)
        with pytest.raises(PersonaError) as e:
            list(b.complete(requests(1)))
    assert e.value.message == f"no reply from {server.base_url} for 0.3s (gave up after 2 attempts)"
    assert e.value.hint.startswith("the server is slower than the timeout: raise it (-o timeout=1200)")
    assert len(server.requests) == 2  # not 1 + max_retries
    assert b.in_flight_limit == 1  # 4 -> 2 -> 1, one halving per timeout


# --- secrets -----------------------------------------------------------------------------------------------


def test_a_key_cut_by_the_length_limit_is_still_redacted():
    # the key starts 15 characters before the 300-character cut: redacting after cutting would show its start
    message = "x" * 284 + " " + KEY
    with OpenAIServer(script=[("status", 400, {}, message)]) as server:
        with pytest.raises(PersonaError) as e:
            list(backend(server).complete(requests(1)))
    assert KEY[:10] not in str(e.value) and "***" in e.value.message


def test_partly_echoed_masked_and_other_keys_in_server_errors_are_redacted(caplog):
    caplog.set_level(logging.INFO, logger="persona")
    other = "sk-proj-AbCdEfGh0123456789IjKlMn"
    message = f"Incorrect API key provided: {KEY[:9]}******{KEY[-4:]}. Header: Bearer {other}; also {other}"
    with OpenAIServer(script=[("status", 500, {}, message), ("status", 403, {}, message)]) as server:
        with pytest.raises(PersonaError) as e:
            list(backend(server).complete(requests(1)))
    shown = str(e.value) + caplog.text
    assert e.value.message.startswith(f"{server.base_url} answered 403: Incorrect API key provided: ***")
    assert KEY[:9] not in shown and other[:12] not in shown and "Bearer ***" in shown


def test_a_key_or_password_echoed_in_a_reply_is_replaced():
    with OpenAIServer(script=[("reply", f"your key is {KEY}."), ("reply", "the password is hunter2-secret")]) as server:
        url = server.base_url.replace("http://", "http://persona-user:hunter2-secret@")
        results = list(backend(server, base_url=url, concurrency=1).complete(requests(2)))
    assert sorted(r.completions[0].text for r in results) == ["the password is ***", "your key is ***."]


def test_short_placeholder_keys_are_not_secrets(monkeypatch):
    monkeypatch.setenv("TEST_API_KEY", "EMPTY")
    with OpenAIServer(script=[("reply", "EMPTY is a word")]) as server:
        [result] = list(backend(server).complete(requests(1)))
    assert result.completions[0].text == "EMPTY is a word"


KEY_LIKE = ["sk-abc123def456ghi789jkl012", "hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh", "0123456789abcdef0123456789abcdef"]


@pytest.mark.parametrize("value", KEY_LIKE)
def test_a_key_given_as_api_key_env_is_refused_and_never_shown(value, monkeypatch):
    monkeypatch.setenv(value, "x") if value.isidentifier() else None  # even when such a variable exists
    with pytest.raises(PersonaError) as e:
        load_backend("openai", model="m", api_key_env=value)
    assert e.value.message.startswith("api_key_env ") and "not shown" in e.value.message
    assert value not in str(e.value) and value[:8] not in str(e.value)
    with pytest.raises(PersonaError) as e:
        load_run_config(None, {"backend": "openai", "api_key_env": value})
    assert value not in str(e.value) and "not shown" in e.value.message
    with pytest.raises(PersonaError) as e:
        dataclasses.replace(RunConfig(), backend_options={"api_key_env": value})
    assert e.value.message.startswith("backend_options.api_key_env ") and value not in str(e.value)


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
