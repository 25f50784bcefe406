"""The `openai` backend: any OpenAI-compatible chat-completions server, through the official openai client.

    export OPENAI_API_KEY=...            # or another variable, named with api_key_env
    backend = OpenAIBackend(model="gpt-4o-mini")
    backend = OpenAIBackend(model="Qwen/Qwen3-8B", base_url="http://localhost:8000/v1", concurrency=64)

Requests run asynchronously, at most `concurrency` in flight. The client's own retries are off; this
module retries 429, 5xx, timeouts, connection errors and malformed replies itself, `max_retries` times,
with exponential backoff and full jitter (sleep uniform(0, min(cap, base * 2^attempt))), never sooner
than the server's Retry-After / retry-after-ms header. Other errors (bad key, unknown model, prompt too
long) fail at once with a message that says what to fix. The API key never appears in messages.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import re
import time
from typing import Iterator, Sequence

from persona.backends import Completion, Request, Result
from persona.errors import PersonaError

log = logging.getLogger("persona")

CONNECTIONS_PER_CLIENT = 16


class OpenAIBackend:
    name = "openai"

    def __init__(self, model: str | None = None, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 32, timeout: float = 60.0, max_retries: int = 6,
                 backoff_base: float = 0.5, backoff_max: float = 30.0):
        import openai  # noqa: F401  (fails early, with the install hint, when the extra is missing)

        if not model:
            raise PersonaError("the openai backend needs a model name",
                               hint="pass --model, e.g. --model gpt-4o-mini, or the name your server serves")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", api_key_env):
            raise PersonaError(f"api_key_env must name an environment variable, got {api_key_env!r}",
                               hint="pass the variable's name (e.g. OPENAI_API_KEY), never the key itself")
        self._api_key = os.environ.get(api_key_env, "")
        if not self._api_key:
            raise PersonaError(f"the environment variable {api_key_env} is not set",
                               hint=f"export {api_key_env}=your-key (a local server without authentication "
                                    f"accepts any value, e.g. {api_key_env}=EMPTY)")
        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        self.api_key_env = api_key_env
        self.concurrency = int(concurrency)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.retries = 0  # retries made so far (for stats and tests)

    def close(self) -> None:
        pass

    def complete(self, requests: Sequence[Request]) -> Iterator[Result]:
        """Yield results as they complete, keeping `concurrency` requests in flight."""
        import openai

        queue = iter(requests)
        with asyncio.Runner() as runner:
            loop = runner.get_loop()
            # httpcore scans every pooled connection for each request, so one pool of 64 connections costs
            # more CPU per request than four pools of 16: spread the requests over several clients.
            clients = [openai.AsyncOpenAI(api_key=self._api_key, base_url=self.base_url, max_retries=0,
                                          timeout=self.timeout)
                       for _ in range(max(1, -(-self.concurrency // CONNECTIONS_PER_CLIENT)))]
            active: set[asyncio.Task] = set()
            sent = 0

            def refill() -> None:
                nonlocal sent
                while len(active) < self.concurrency and (request := next(queue, None)) is not None:
                    client = clients[sent % len(clients)]
                    sent += 1
                    active.add(loop.create_task(self._complete_one(client, request)))

            try:
                refill()
                while active:
                    done, active = runner.run(asyncio.wait(active, return_when=asyncio.FIRST_COMPLETED))
                    refill()  # top up before handing results out, so the server stays busy meanwhile
                    # hand out successes before raising a failure, so finished work is saved
                    for task in sorted(done, key=lambda t: t.exception() is not None):
                        yield task.result()
            finally:
                for task in active:
                    task.cancel()
                if active:
                    runner.run(asyncio.wait(active))
                for client in clients:
                    runner.run(client.close())

    async def _complete_one(self, client, request: Request) -> Result:
        params = request.params
        body = dict(model=self.model, messages=list(request.messages), n=params.n, temperature=params.temperature,
                    top_p=params.top_p, max_tokens=params.max_tokens)
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        if params.json_schema:  # structured output: the server constrains the reply to the schema
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "reply", "schema": json.loads(params.json_schema)}}
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                # the raw reply, parsed as plain JSON: building the client's pydantic models costs more CPU
                # per request than the rest of the call at high concurrency
                raw = await client.chat.completions.with_raw_response.create(**body)
                reply = json.loads(raw.http_response.content)
                return Result(request, self._completions(reply, params.n, time.perf_counter() - started))
            except Exception as error:  # classified below; anything unexpected is re-raised
                retryable, wait_at_least, message, hint = self._classify(error)
                if not retryable or attempt >= self.max_retries:
                    if retryable:
                        message += f" (gave up after {attempt + 1} attempts)"
                    raise PersonaError(self._redact(message), hint=self._redact(hint)) from None
                delay = max(wait_at_least, random.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** attempt)))
                log.info("request %s: %s; retrying in %.2fs", request.key, self._redact(message), delay)
                attempt += 1
                self.retries += 1
                await asyncio.sleep(delay)

    def _completions(self, reply: dict, n: int, latency: float) -> tuple[Completion, ...]:
        choices = reply.get("choices") if isinstance(reply, dict) else None
        if not choices or not all(isinstance((c.get("message") or {}).get("content"), str) for c in choices):
            raise MalformedReply("the server's reply has no message content")
        usage = reply.get("usage") or {}
        prompt_tokens = usage.get("prompt_tokens") or 0
        # usage counts all n choices together; split it evenly between them
        completion_tokens = (usage.get("completion_tokens") or 0) // len(choices)
        return tuple(Completion(c["message"]["content"].strip(), prompt_tokens, completion_tokens,
                                c.get("finish_reason") or "stop", latency) for c in choices[:n])

    def _classify(self, error: Exception) -> tuple[bool, float, str, str]:
        """(retry?, seconds the server asked us to wait, message, hint)."""
        import openai

        where = _safe_url(self.base_url)
        if isinstance(error, MalformedReply):
            return True, 0.0, f"malformed reply from {where}: {error}", "check the server is OpenAI-compatible"
        if isinstance(error, openai.APITimeoutError):
            return True, 0.0, f"request to {where} timed out after {self.timeout:g}s", "raise timeout, or lower concurrency"
        if isinstance(error, openai.APIConnectionError):
            return True, 0.0, f"cannot reach {where}", "check --base-url and that the server is running"
        if isinstance(error, openai.APIResponseValidationError):
            return True, 0.0, f"malformed reply from {where}", "check the server is OpenAI-compatible"
        if isinstance(error, openai.APIStatusError):
            status = error.status_code
            wait = _retry_after(error.response.headers)
            detail = _short(error)
            if status == 429 or status >= 500 or status in (408, 409):
                return True, wait, f"{where} answered {status}: {detail}", "the server is overloaded or failing; try lower --concurrency"
            if status == 401:
                return False, 0.0, f"{where} rejected the API key from {self.api_key_env} (401)", f"check {self.api_key_env}"
            if status == 404:
                return False, 0.0, f"{where} has no model '{self.model}' (404: {detail})", "check --model and --base-url"
            if status == 400 and re.search(r"context|too long|maximum.*tokens", detail, re.I):
                return False, 0.0, f"the prompt is too long for '{self.model}': {detail}", "lower --max-tokens or shorten the spec's examples"
            return False, 0.0, f"{where} answered {status}: {detail}", "check the request settings"
        if isinstance(error, (ValueError, KeyError, TypeError, AttributeError)):  # unparseable body
            return True, 0.0, f"malformed reply from {where}: {type(error).__name__}", "check the server is OpenAI-compatible"
        raise error

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text


class MalformedReply(Exception):
    pass


def _retry_after(headers) -> float:
    """Seconds from Retry-After (seconds or an HTTP date) or retry-after-ms; 0 when absent. Capped at 120 s."""
    try:
        if headers.get("retry-after-ms"):
            return min(120.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if not value:
            return 0.0
        try:
            return min(120.0, max(0.0, float(value)))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return min(120.0, max(0.0, when.timestamp() - time.time()))
    except (TypeError, ValueError):
        return 0.0


def _short(error) -> str:
    """The server's own error message, without the client's "Error code: 400 - " prefix."""
    body = getattr(error, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    message = body.get("message") if isinstance(body, dict) and body.get("message") else None
    if message is None:
        message = re.sub(r"^Error code: \d+ - ", "", getattr(error, "message", None) or str(error))
    return " ".join(str(message).split())[:300]


def _safe_url(url: str) -> str:
    """The base URL without any user:password@ part."""
    return re.sub(r"//[^/@]*@", "//", str(url))
