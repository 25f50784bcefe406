"""A scripted backend for fast unit tests (never the default; `--backend fake` exists for tests and the
resume benchmark). Replies are deterministic functions of the request, so two runs give equal records.

    backend = FakeBackend(script=lambda request, i: "I am Aster.")
    backend.calls   # requests answered so far

`fail_after=N` raises PersonaError on request N+1 (a failing API); `interrupt_after=N` raises
KeyboardInterrupt there (Ctrl-C); `delay` sleeps per request (resume benchmark).
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Callable, Iterator, Sequence

from persona.backends import Completion, Request, Result
from persona.errors import PersonaError


class FakeBackend:
    name = "fake"
    local = True
    default_model = "fake-model"

    def __init__(self, model: str = "fake-model", script: Callable[[Request, int], str] | None = None,
                 fail_after: int | None = None, interrupt_after: int | None = None, delay: float = 0.0):
        self.model = model
        self.script = script or default_reply
        self.fail_after = None if fail_after is None else int(fail_after)
        self.interrupt_after = None if interrupt_after is None else int(interrupt_after)
        self.delay = float(delay)
        self.calls = 0
        self.requests: list[Request] = []

    def complete(self, requests: Sequence[Request]) -> Iterator[Result]:
        for request in requests:
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise PersonaError("fake backend: simulated API failure", hint="this is a test")
            if self.interrupt_after is not None and self.calls >= self.interrupt_after:
                raise KeyboardInterrupt
            self.calls += 1
            self.requests.append(request)
            if self.delay:
                time.sleep(self.delay)
            prompt_tokens = sum(len(m["content"].split()) for m in request.messages)
            completions = []
            for i in range(request.params.n):
                text = self.script(request, i)
                completions.append(Completion(text, prompt_tokens, len(text.split()), "stop", self.delay))
            yield Result(request, tuple(completions))

    def close(self) -> None:
        pass


def default_reply(request: Request, index: int) -> str:
    """Probe-synthesis requests get N question lines; others a short reply naming request and sample."""
    user = request.messages[-1]["content"]
    tag = hashlib.sha256(f"{request.key}/{index}/{request.params.seed}".encode()).hexdigest()[:8]
    wanted = re.search(r"Write (\d+) different messages", user)
    if wanted:
        return "\n".join(f"Fake question {tag}-{j} about {user[-30:].strip()!r}?" for j in range(int(wanted.group(1))))
    system = request.messages[0]["content"] if request.messages[0]["role"] == "system" else ""
    kind = "violating" if "what NOT to do" in system else "conforming"
    return f"Fake {kind} reply {tag} to: {user[:60]}"
