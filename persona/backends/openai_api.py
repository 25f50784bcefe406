"""The `openai` backend: any OpenAI-compatible chat-completions server, through the official openai client.

    export OPENAI_API_KEY=...            # or another variable, named with api_key_env
    backend = OpenAIBackend(model="gpt-4o-mini")
    backend = OpenAIBackend(model="Qwen/Qwen3-8B", base_url="http://localhost:8000/v1", concurrency=64)

Requests run asynchronously, at most `concurrency` in flight. The client's own retries are off; this
module retries 429, 5xx, timeouts, connection errors and malformed replies itself, `max_retries` times,
with exponential backoff and full jitter (sleep uniform(0, min(cap, base * 2^attempt))), never sooner
than the server's Retry-After / retry-after-ms header. Other errors (bad key, unknown model, prompt too
long) fail at once with a message that says what to fix.

Exactly n samples. A request asks for `n` choices; servers that ignore `n` (transformers serve, Ollama)
or cap it return fewer, and some refuse it (llama.cpp before n_cmpl: "Only one completion choice is
allowed"). The missing samples are asked for again with n = missing (n = 1 after a refusal), each call
with its own seed (seed + index of its first sample: a server that seeds per request would repeat the
sample); the most choices a server gave is remembered, so later requests ask for at most that many at a
time and no request is wasted. Extra choices are cut to n.

Structured output. A request with a JSON schema (the llm judge) asks for response_format json_schema, which
vLLM, OpenAI and llama.cpp honour. A server that refuses it (a 4xx/5xx naming response_format, the schema,
structured or guided output, or a grammar) is warned about once and asked again without it, for the rest
of the run: the judge parses replies as text (one retry, then unjudged), so nothing is lost.

Slow local servers. A server on this machine or the local network (localhost, *.localhost, *.local,
*.internal, a single-label host name, a loopback, private or link-local IP) usually runs one model on
few slots and queues what it cannot start, and most keep generating a request whose client gave up.
Retrying queued requests only piles more work onto it, so for a local server:
  * defaults: concurrency 4 (remote: 32) and timeout 600 s (remote: 60 s);
  * the timeout is a stall timeout: a request is given up only when it has waited `timeout` seconds AND
    the server has answered none of our requests for `timeout` seconds (while answers arrive, it is busy
    working through our queue, not stuck); never later than 4 x timeout in any case;
  * a timeout is retried at most once (`timeout_retries`, remote: `max_retries`);
  * after any timeout, local or remote, the number of requests in flight is halved (down to 1) for the
    rest of the run, retries included, so the server can drain what it is still working on.
Explicit concurrency, timeout and timeout_retries always win (vLLM on localhost wants --concurrency 64).

Secrets. The API key never appears in messages, logs or records: server error text is redacted (the
key, any 8+ character piece of it, base_url credentials, "Bearer ..." and anything key-shaped) before
it is shortened, and a key or base_url password that a server echoes back in a reply is replaced with
"***" in the completion text. Values under 8 characters (EMPTY, none) are placeholders, not secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ipaddress
import json
import logging
import os
import random
import re
import time
from typing import Iterator, Sequence
from urllib.parse import urlsplit

from persona.backends import Completion, Request, Result
from persona.secrets import KEY_SHAPED, api_key_env_problem, url_credentials, url_without_credentials
from persona.errors import PersonaError

log = logging.getLogger("persona")

CONNECTIONS_PER_CLIENT = 16
DEFAULTS = {"local": dict(concurrency=4, timeout=600.0), "remote": dict(concurrency=32, timeout=60.0)}
LOCAL_TIMEOUT_RETRIES = 1
STALL_LIMIT = 4  # a local request is given up after STALL_LIMIT x timeout even while the server answers others
MIN_SECRET = 8  # shorter "keys" (EMPTY, none, x) are placeholders for servers without authentication


class OpenAIBackend:
    name = "openai"
    local = False  # the model runs on a server
    default_model = None  # a server serves what it serves: --model names it

    def __init__(self, model: str | None = None, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int | None = None, timeout: float | None = None, max_retries: int = 6,
                 timeout_retries: int | None = None, backoff_base: float = 0.5, backoff_max: float = 30.0):
        import openai  # noqa: F401  (fails early, with the install hint, when the extra is missing)

        if not model:
            raise PersonaError("the openai backend needs a model name",
                               hint="pass --model, e.g. --model gpt-4o-mini, or the name your server serves")
        problem = api_key_env_problem(api_key_env)
        if problem:
            raise PersonaError(f"api_key_env {problem[0]}", hint=problem[1])
        self._api_key = os.environ.get(api_key_env, "")
        if not self._api_key:
            raise PersonaError(f"the environment variable {api_key_env} is not set",
                               hint=f"export {api_key_env}=your-key (a local server without authentication "
                                    f"accepts any value, e.g. {api_key_env}=EMPTY)")
        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        self.api_key_env = api_key_env
        self.local = is_local_url(self.base_url)
        defaults = DEFAULTS["local" if self.local else "remote"]
        self.concurrency = int(concurrency or defaults["concurrency"])
        self.timeout = float(timeout or defaults["timeout"])
        self.max_retries = int(max_retries)
        self.timeout_retries = int(timeout_retries if timeout_retries is not None
                                   else LOCAL_TIMEOUT_RETRIES if self.local else max_retries)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.retries = 0  # retries made so far (for stats and tests)
        self.calls = 0  # HTTP requests sent (more than the requests asked for when the server ignores n)
        self.in_flight_limit = self.concurrency  # halved after each timeout
        self.n_limit: int | None = None  # most choices the server returned, once it returned fewer than asked
        self.structured_output = True  # False once the server refused a JSON schema
        self._secrets = sorted({s for s in (self._api_key, *url_credentials(self.base_url)) if len(s) >= MIN_SECRET},
                               key=len, reverse=True)
        self._key_pieces = {self._api_key[i:i + MIN_SECRET] for i in range(len(self._api_key) - MIN_SECRET + 1)}
        self._in_flight = 0
        self._last_reply = 0.0  # loop time of the server's last answer to any of our requests

    def close(self) -> None:
        pass

    def complete(self, requests: Sequence[Request]) -> Iterator[Result]:
        """Yield results as they complete, keeping `concurrency` requests in flight."""
        import openai

        queue = iter(requests)
        with asyncio.Runner() as runner:
            loop = runner.get_loop()
            self._slots, self._in_flight = asyncio.Condition(), 0
            self._last_reply = loop.time()
            # our own deadlines decide when a request has timed out; the client's is only a backstop
            backstop = self.timeout * (STALL_LIMIT if self.local else 1) + 30
            # httpcore scans every pooled connection for each request, so one pool of 64 connections costs
            # more CPU per request than four pools of 16: spread the requests over several clients.
            clients = [openai.AsyncOpenAI(api_key=self._api_key, base_url=self.base_url, max_retries=0, timeout=backstop)
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
        """All n samples of one request, in as many calls as the server needs (see "Exactly n samples")."""
        params = request.params
        completions: list[Completion] = []
        while len(completions) < params.n:
            have, missing = len(completions), params.n - len(completions)
            ask = min(missing, self.n_limit or missing)
            try:
                got = await self._call(client, request, self._body(request, ask, have))
            except RejectedN as rejected:  # e.g. older llama.cpp: "Only one completion choice is allowed"
                self._learn_n_limit(1, ask, f"it rejected n={ask}: {rejected}")
                continue
            except RejectedSchema as rejected:
                self._learn_no_schema(str(rejected))
                continue
            if len(got) < ask:
                self._learn_n_limit(len(got), ask, f"it returned {len(got)} of the {ask} choices asked for")
            completions += got[:missing]
        return Result(request, tuple(completions))

    def _body(self, request: Request, n: int, first_sample: int) -> dict:
        params = request.params
        body = dict(model=self.model, messages=list(request.messages), n=n, temperature=params.temperature,
                    top_p=params.top_p, max_tokens=params.max_tokens)
        if params.seed is not None:  # a distinct seed per call: a server that ignores n would repeat a sample
            body["seed"] = params.seed + first_sample
        if params.stop:
            body["stop"] = list(params.stop)
        if params.json_schema and self.structured_output:  # the server constrains the reply to the schema
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "reply", "schema": json.loads(params.json_schema)}}
        return body

    def _learn_n_limit(self, limit: int, asked: int, why: str) -> None:
        if self.n_limit is None or limit < self.n_limit:
            self.n_limit = limit
            log.warning("%s does not give n choices per request (%s): asking for at most %d per request from now on",
                        url_without_credentials(self.base_url), why, limit)

    def _learn_no_schema(self, why: str) -> None:
        if self.structured_output:
            self.structured_output = False
            log.warning("%s refused structured output (%s): asking without a JSON schema from now on, so the "
                        "judge reads its replies as text. For schema-constrained replies, serve the judge model "
                        "where response_format json_schema works (vLLM, OpenAI, llama.cpp); to not ask at all, "
                        "set structured_output: false under judge_options: in the job file",
                        url_without_credentials(self.base_url), why)

    async def _call(self, client, request: Request, body: dict) -> tuple[Completion, ...]:
        """One HTTP request with retries; its choices as completions."""
        import openai

        attempt = timeouts = 0
        while True:
            try:
                async with self._slot():
                    started = time.perf_counter()
                    self.calls += 1
                    # the raw reply, parsed as plain JSON: building the client's pydantic models costs more
                    # CPU per request than the rest of the call at high concurrency
                    raw = await self._within_deadline(client.chat.completions.with_raw_response.create(**body))
                reply = json.loads(raw.http_response.content)
                return self._completions(reply, time.perf_counter() - started)
            except Exception as error:  # classified below; anything unexpected is re-raised
                if body["n"] > 1 and isinstance(error, openai.APIStatusError) and _rejects_n(error):
                    raise RejectedN(_short(self._redact(_server_message(error)))) from None
                if "response_format" in body and isinstance(error, openai.APIStatusError) and _rejects_schema(error):
                    raise RejectedSchema(_short(self._redact(_server_message(error)))) from None
                retryable, wait_at_least, message, hint = self._classify(error)
                if isinstance(error, (TimedOut, openai.APITimeoutError)):
                    timeouts += 1
                    self._halve_in_flight()
                out_of_tries = attempt >= self.max_retries or timeouts > self.timeout_retries
                if not retryable or out_of_tries:
                    if retryable:
                        message += f" (gave up after {attempt + 1} attempts)"
                    raise PersonaError(self._scrub(message), hint=self._scrub(hint)) from None
                delay = max(wait_at_least, random.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** attempt)))
                log.info("request %s: %s; retrying in %.2fs", request.key, self._scrub(message), delay)
                attempt += 1
                self.retries += 1
                await asyncio.sleep(delay)

    @contextlib.asynccontextmanager
    async def _slot(self):
        """One of `in_flight_limit` places for a request on the wire."""
        async with self._slots:
            await self._slots.wait_for(lambda: self._in_flight < self.in_flight_limit)
            self._in_flight += 1
        try:
            yield
        finally:
            async with self._slots:
                self._in_flight -= 1
                self._slots.notify_all()

    async def _within_deadline(self, call):
        """Await the HTTP call until it answers or its deadline passes (then TimedOut). Remote: `timeout`
        after it was sent. Local: `timeout` after it was sent or after the server last answered us, whichever
        is later (a stall timeout), and never later than STALL_LIMIT x timeout after it was sent."""
        import openai

        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(call)
        sent = loop.time()

        def deadline() -> float:
            if not self.local:
                return sent + self.timeout
            return min(sent + STALL_LIMIT * self.timeout, max(sent, self._last_reply) + self.timeout)

        try:
            while not task.done():
                await asyncio.wait({task}, timeout=max(0.0, deadline() - loop.time()))
                if not task.done() and loop.time() >= deadline():
                    raise TimedOut()
            return task.result()
        finally:
            if task.done() and not task.cancelled():
                if task.exception() is None or isinstance(task.exception(), openai.APIStatusError):
                    self._last_reply = loop.time()  # the server answered: it is alive and working
            else:
                task.cancel()  # closes the connection; the server may or may not stop generating

    def _halve_in_flight(self) -> None:
        if self.in_flight_limit > 1:
            self.in_flight_limit = max(1, self.in_flight_limit // 2)
            log.warning("a request to %s timed out: at most %d requests in flight from now on",
                        url_without_credentials(self.base_url), self.in_flight_limit)

    def _completions(self, reply: dict, latency: float) -> tuple[Completion, ...]:
        choices = reply.get("choices") if isinstance(reply, dict) else None
        if not choices or not all(isinstance((c.get("message") or {}).get("content"), str) for c in choices):
            raise MalformedReply("the server's reply has no message content")
        usage = reply.get("usage") or {}
        prompt_tokens = usage.get("prompt_tokens") or 0
        # usage counts all choices together; split it evenly between them
        completion_tokens = (usage.get("completion_tokens") or 0) // len(choices)
        return tuple(Completion(self._scrub(c["message"]["content"].strip()), prompt_tokens, completion_tokens,
                                c.get("finish_reason") or "stop", latency) for c in choices)

    def _classify(self, error: Exception) -> tuple[bool, float, str, str]:
        """(retry?, seconds the server asked us to wait, message, hint)."""
        import openai

        where = url_without_credentials(self.base_url)
        if isinstance(error, MalformedReply):
            return True, 0.0, f"malformed reply from {where}: {error}", "check the server is OpenAI-compatible"
        if isinstance(error, (TimedOut, openai.APITimeoutError)):
            if self.local:
                return (True, 0.0, f"no reply from {where} for {self.timeout:g}s",
                        "the server is slower than the timeout: raise it (-o timeout=1200), or lower --concurrency "
                        "or --max-tokens")
            return True, 0.0, f"request to {where} timed out after {self.timeout:g}s", "raise timeout (-o timeout=120), or lower --concurrency"
        if isinstance(error, openai.APIConnectionError):
            return True, 0.0, f"cannot reach {where}", "check --base-url and that the server is running"
        if isinstance(error, openai.APIResponseValidationError):
            return True, 0.0, f"malformed reply from {where}", "check the server is OpenAI-compatible"
        if isinstance(error, openai.APIStatusError):
            status = error.status_code
            wait = _retry_after(error.response.headers)
            detail = _short(self._redact(_server_message(error)))  # redact first: a cut could split a key
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

    def _scrub(self, text: str) -> str:
        """`text` with our secrets (the key, base_url credentials) replaced by ***; nothing else touched."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _redact(self, text: str) -> str:
        """Server text made safe to show: our secrets, any 8+ character piece of the key (a server may echo
        part of it), Bearer tokens and anything shaped like a key become ***."""
        text = re.sub(r"(?i)\bbearer\s+\S+", "Bearer ***", self._scrub(text))
        if self._key_pieces:
            text = re.sub(r"[^\s'\"`,;:()\[\]{}<>]{%d,}" % MIN_SECRET,
                          lambda m: "***" if any(p in m.group() for p in self._key_pieces) else m.group(), text)
        return KEY_SHAPED.sub("***", text)


class MalformedReply(Exception):
    pass


class RejectedN(Exception):
    """The server refused a request for more than one choice."""


class RejectedSchema(Exception):
    """The server refused a request for structured output (response_format json_schema)."""


class TimedOut(Exception):
    """No reply before this backend's own deadline (see _within_deadline)."""


def is_local_url(url: str) -> bool:
    """Whether `url` points at this machine or the local network (see "Slow local servers" above)."""
    host = (urlsplit(str(url)).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")) or (host and "." not in host and ":" not in host):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local or address.is_unspecified


def _rejects_n(error) -> bool:
    """Whether an error reply refuses n > 1: "Only one completion choice is allowed" (llama.cpp before n_cmpl),
    "n must be ...", "'n' ...", "n_cmpl ..."."""
    return error.status_code in (400, 422, 500, 501) and bool(re.search(
        r"(?i)\bchoices?\b.{0,20}\b(allowed|supported)\b|\bn_cmpl\b|['\"`]n['\"`]|\bn\b\s*(must|should|has to|is not|>|<|=)",
        _server_message(error)))


def _rejects_schema(error) -> bool:
    """Whether an error reply to a request with response_format refuses the structured output itself: "Grammar
    error: ..." (vLLM's xgrammar), "response_format is not supported", "json_schema ...", "guided decoding ..."."""
    return error.status_code in (400, 422, 500, 501) and bool(re.search(
        r"(?i)response_format|json_schema|\bschema\b|structured|guided|grammar", _server_message(error)))


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


def _server_message(error) -> str:
    """The server's own error message, without the client's "Error code: 400 - " prefix, on one line."""
    body = getattr(error, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    message = body.get("message") if isinstance(body, dict) and body.get("message") else None
    if message is None:
        message = re.sub(r"^Error code: \d+ - ", "", getattr(error, "message", None) or str(error))
    return " ".join(str(message).split())


def _short(text: str) -> str:
    return text[:300]
