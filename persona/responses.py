"""Responses: for every probe prompt, k conforming and k violating responses. Stage 2 of `persona generate`.

  * conforming: the identity's system prompt (templates/conforming.j2, with the spec's examples as
    demonstrations) + the prompt; one request with n=k;
  * violating: k requests, each with templates/violating.j2 aimed at one named target (the identity,
    a trait, style rule, constraint or ethics item), recorded on the record. The prompt's own target
    comes first; the others rotate through the spec so that every target gets rejected examples.

Every record carries its provenance (prompt id, template name and hash, backend, model, sampling
parameters, seed, token counts, latency) and is keyed by a hash of its inputs, so a re-run makes no
calls for what is done and a spec or template change regenerates only what it affects:

    {"id": "9e1f...-0", "prompt_id": "3f9c...", "kind": "violating", "target": "no-guarantees",
     "target_kind": "constraint", "text": "...", "template": "violating", "template_hash": "...",
     "backend": "hf", "model": "SmolLM2-135M-Instruct", "params": {...}, "seed": 0, ...}
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from typing import Callable

from persona.backends import Request, SamplingParams
from persona.config import RunConfig
from persona.prompts import PromptRecord
from persona.run import RunFolder
from persona.spec import Spec, Target
from persona.store import append_missing, input_key, now
from persona.templates import render_template, template_hash


@dataclass(frozen=True)
class ResponseRecord:
    id: str  # "<request key>-<sample index>"
    request: str
    prompt_id: str
    prompt: str
    split: str
    kind: str  # conforming | violating
    target: str | None  # what a violating response breaks
    target_kind: str | None
    sample: int
    text: str
    template: str
    template_hash: str
    system_prompt_hash: str
    backend: str
    model: str
    params: dict
    seed: int | None
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    latency_s: float
    created: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ResponseRecord":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class PlannedRequest:
    request: Request
    prompt: PromptRecord
    kind: str
    target: Target | None
    template: str
    template_hash: str
    system_prompt_hash: str


def violation_targets(spec: Spec, prompt: PromptRecord, k: int) -> list[Target]:
    """k distinct targets for a prompt's violating responses: its own target first, then a rotation that
    starts at a place fixed by the prompt's id."""
    targets = list(spec.targets())
    if not targets:
        return []
    start = int(hashlib.sha256(prompt.id.encode()).hexdigest()[:8], 16) % len(targets)
    order = targets[start:] + targets[:start]
    own = [t for t in order if t.id == prompt.target]
    order = own + [t for t in order if t.id != prompt.target]
    return order[:k]


def plan_requests(spec: Spec, prompts: list[PromptRecord], config: RunConfig, backend_label: str) -> list[PlannedRequest]:
    params = SamplingParams(n=config.k, temperature=config.temperature, top_p=config.top_p,
                            max_tokens=config.max_tokens, seed=config.seed)
    conforming = render_template("conforming", config.templates, spec=spec)
    hashes = {name: template_hash(name, config.templates) for name in ("conforming", "violating")}
    violating_systems: dict[str, str] = {}
    planned = []
    for prompt in prompts:
        messages = ({"role": "system", "content": conforming}, {"role": "user", "content": prompt.text})
        key = input_key("response", messages, params.to_dict(), backend_label)
        planned.append(PlannedRequest(Request(key, messages, params), prompt, "conforming", None, "conforming",
                                      hashes["conforming"], _hash(conforming)))
        for target in violation_targets(spec, prompt, config.k):
            if target.id not in violating_systems:
                violating_systems[target.id] = render_template("violating", config.templates, spec=spec, target=target)
            system = violating_systems[target.id]
            one = replace(params, n=1)
            messages = ({"role": "system", "content": system}, {"role": "user", "content": prompt.text})
            key = input_key("response", messages, one.to_dict(), backend_label)
            planned.append(PlannedRequest(Request(key, messages, one), prompt, "violating", target, "violating",
                                          hashes["violating"], _hash(system)))
    return planned


def generate_responses(spec: Spec, prompts: list[PromptRecord], config: RunConfig, run: RunFolder,
                       get_backend: Callable, backend_label: str,
                       on_progress: Callable | None = None) -> tuple[list[ResponseRecord], int]:
    """Every planned response, generating only the missing ones; returns (records, requests made)."""
    planned = plan_requests(spec, prompts, config, backend_label)
    by_key = {p.request.key: p for p in planned}

    def to_records(result) -> list[dict]:
        plan, backend = by_key[result.request.key], get_backend()
        return [ResponseRecord(
            id=f"{result.request.key}-{i}", request=result.request.key, prompt_id=plan.prompt.id,
            prompt=plan.prompt.text, split=plan.prompt.split, kind=plan.kind,
            target=plan.target.id if plan.target else None, target_kind=plan.target.kind if plan.target else None,
            sample=i, text=c.text, template=plan.template, template_hash=plan.template_hash,
            system_prompt_hash=plan.system_prompt_hash, backend=backend.name, model=backend.model,
            params=result.request.params.to_dict(), seed=result.request.params.seed,
            prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens, finish_reason=c.finish_reason,
            latency_s=round(c.latency_s, 3), created=now()).to_dict() for i, c in enumerate(result.completions)]

    def is_done(request: Request, done: dict) -> bool:
        return all(f"{request.key}-{i}" in done for i in range(request.params.n))

    done, made = append_missing(run.store("responses"), [p.request for p in planned],
                                lambda pending: get_backend().complete(pending), to_records, is_done,
                                stage="responses", on_progress=on_progress)
    ids = [f"{p.request.key}-{i}" for p in planned for i in range(p.request.params.n)]
    run.finish_stage("responses", ids)
    return [ResponseRecord.from_dict(done[i]) for i in ids], made


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
