"""Responses: what the model should and should not say to each probe prompt. Stage 2 of `persona generate`.

For every probe prompt:
  * conforming: the identity's system prompt (templates/conforming.j2, with the spec's examples as
    demonstrations) + the prompt, from the generator; one request with n=k. With a rejection budget,
    prompts whose conforming answers the judge all failed get more, a round of k at a time (`rounds`);
  * violating, `violating: targeted` (the default): k requests, each with templates/violating.j2 aimed at one
    named target (the identity, a trait, style rule, constraint or ethics item), recorded on the record. The
    prompt's own target comes first; the others rotate through the spec so every target gets rejected
    examples. `violating: plain`: the target model's own k answers with no persona prompt (its chat template's
    default), the rejected side Open Character Training uses;
  * demonstration: for identity questions and the spec's example prompts, answers that state the identity,
    filled from the spec (templates/identity_answers.j2) or the example's own response. No model writes them,
    so they are right whatever the generator can do, and they cost nothing: every identity question gets
    max(k, DEMONSTRATIONS_PER_QUESTION) of them, the first asked plainly, the others inside a conversation.
Replay prompts (persona/data/replay_prompts.txt) get one answer each from the target model, sampled at
temperature 1 with an empty system message: kind "replay", mixed into training so the model keeps its general
behaviour. In-domain replay (`domain_replay`, template "domain"): the train-split probe prompts of the
persona's own domain (the spec's seeds and the synthesized prompts of every target, not identity questions)
get `domain_replay` answers each from the target model, under the deployment prompt and the identity's
description (domain_system_prompt) at the generator's sampling settings; the build trains on the best one the
judge and the universal checks accept (rejection sampling), with persona's usual system prompts, so SFT
teaches the persona on top of the model's help, not instead of it.

Every record carries its provenance (prompt id, template name and hash, backend, model, sampling
parameters, seed, token counts, latency) and is keyed by a hash of its inputs, so a re-run makes no
calls for what is done and a spec or template change regenerates only what it affects:

    {"id": "9e1f...-0", "prompt_id": "3f9c...", "kind": "violating", "target": "no-guarantees",
     "target_kind": "constraint", "text": "...", "template": "violating", "template_hash": "...",
     "backend": "hf", "model": "SmolLM2-135M-Instruct", "params": {...}, "seed": 0, "round": 0, ...}
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from dataclasses import asdict, dataclass, replace
from typing import Callable

from persona.backends import Request, SamplingParams
from persona.config import RunConfig
from persona.prompts import REPLAY_SOURCE, PromptRecord
from persona.run import RunFolder
from persona.spec import Spec, Target
from persona.store import append_missing, input_key, now
from persona.templates import render_template, tagged_lines, template_hash

log = logging.getLogger("persona")

GENERATOR, TARGET = "generator", "target"  # which model answers a request
IDENTITY_SOURCES = ("identity", "break", "origin")  # built-in probes that ask who the assistant is
DEMONSTRATIONS_PER_QUESTION = 2  # at least: one asked plainly, one in a conversation (identity_contexts.j2)
DOMAIN_SOURCES = ("seed", "synthesized")  # the persona's own domain: in-domain replay asks the target model these
DOMAIN_TEMPLATE = "domain"  # a replay record's template when it answers a probe prompt (general replay: "replay")
REPLAY_TOKENS = 256  # replay answers are the target model's usual ones: long enough that few are cut off
ANSWER_LINE = re.compile(r"^\[(?P<asks>name|maker)\]\s+(?P<text>\S.*)$")
CONTEXT_LINE = re.compile(r"^\[(?P<kind>turns|prefix|suffix)\]\s+(?P<text>\S.*)$")
TURN = re.compile(r"^(?P<role>user|assistant):\s*(?P<text>\S.*)$")


@dataclass(frozen=True)
class ResponseRecord:
    id: str  # "<request key>-<sample index>"
    request: str
    prompt_id: str
    prompt: str
    split: str
    kind: str  # conforming | violating | demonstration | replay
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
    round: int = 0  # rejection sampling: 0 for the first k conforming samples, then 1, 2, ...
    context: tuple = ()  # demonstrations: turns before the question (templates/identity_contexts.j2)
    asked_as: str = ""  # "" (the prompt as it is) or the context it was asked in: turns | prefix | suffix

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ResponseRecord":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}  # older records: no round, context
        if "context" in known:
            known["context"] = tuple(known["context"])
        return cls(**known)

    @property
    def truncated(self) -> bool:
        """Cut off at the token limit: never a chosen or demonstrated answer."""
        return self.finish_reason == "length"


@dataclass(frozen=True)
class PlannedRequest:
    request: Request
    prompt: PromptRecord
    kind: str
    target: Target | None
    template: str
    template_hash: str
    system_prompt_hash: str
    role: str = GENERATOR  # generator | target
    round: int = 0


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


def _word_limits(spec: Spec) -> list[int]:
    """The max_words of every style rule and constraint check that has one."""
    return [check.max_words for _, check in spec.checks() if check.max_words]


def response_max_tokens(spec: Spec, config: RunConfig) -> int:
    """config.max_tokens, raised where the spec allows longer answers: a response that keeps a max_words
    check must fit (about 1.4 tokens a word), or it is cut off and every pair it is in teaches length."""
    return max([config.max_tokens] + [math.ceil(1.4 * w) for w in _word_limits(spec)])


def replay_max_tokens(spec: Spec, config: RunConfig) -> int:
    """REPLAY_TOKENS (or more with a higher --max-tokens), but within the spec's smallest max_words check: the
    judge scores replay answers against the spec too, and an answer cut off past the word limit would be
    dropped for its length alone. A token is at most about one word, so max_words tokens keep it."""
    return min([max(config.max_tokens, REPLAY_TOKENS)] + _word_limits(spec))


def target_of(prompt: PromptRecord, spec: Spec) -> Target | None:
    """The spec target a probe prompt was written to test (None for seeds)."""
    if prompt.target is None:
        return None
    return next((t for t in spec.targets() if t.id == prompt.target), Target("", prompt.target, ""))


def domain_system_prompt(spec: Spec, templates_dir=None) -> str:
    """The system prompt of in-domain replay: the deployment prompt (templates/deployment.j2) and what the
    assistant is for (identity.description) - the domain, without the rubric the conforming prompt spells out."""
    if spec.identity is None:
        return ""
    deployment = render_template("deployment", templates_dir, spec=spec).strip()
    return f"{deployment} {spec.identity.description}".strip() if spec.identity.description else deployment


def plan_requests(spec: Spec, prompts: list[PromptRecord], config: RunConfig, labels: dict[str, str],
                  rounds: dict[str, int] | None = None,
                  demonstrated: frozenset[str] = frozenset()) -> list[PlannedRequest]:
    """Every request of the stage. `labels` name the generator and target models (response keys depend on
    them); `rounds` gives prompts their rejection-sampling rounds beyond the first; `demonstrated` names the
    prompts that have demonstrations, which get no conforming request unless conforming_for_demonstrated."""
    params = SamplingParams(n=config.k, temperature=config.temperature, top_p=config.top_p,
                            max_tokens=response_max_tokens(spec, config), seed=config.seed)
    conforming = render_template("conforming", config.templates, spec=spec)
    skip = frozenset() if config.conforming_for_demonstrated else demonstrated
    hashes = {name: template_hash(name, config.templates) for name in ("conforming", "violating")}
    violating_systems: dict[str, str] = {}
    deployment = domain_system_prompt(spec, config.templates) if config.domain_replay else ""
    planned = []
    for prompt in prompts:
        if prompt.source == REPLAY_SOURCE:
            # sampled at temperature 1: the model's own distribution, so training on it leaves that unchanged in
            # expectation (greedy answers would sharpen it, and raise perplexity on ordinary text)
            own = SamplingParams(n=1, temperature=1.0, top_p=1.0, max_tokens=replay_max_tokens(spec, config),
                                 seed=config.seed)
            messages = ({"role": "system", "content": ""}, {"role": "user", "content": prompt.text})
            key = input_key("replay", messages, own.to_dict(), labels[TARGET])
            planned.append(PlannedRequest(Request(key, messages, own), prompt, "replay", None, "replay", "",
                                          _hash(""), TARGET))
            continue
        if config.domain_replay and prompt.source in DOMAIN_SOURCES and prompt.split == "train" \
                and prompt.id not in demonstrated:
            # the generator's sampling, not temperature 1: the best of these is kept (rejection sampling), and
            # a small model's temperature-1 answers wander off the domain
            own = SamplingParams(n=config.domain_replay, temperature=config.temperature, top_p=config.top_p,
                                 max_tokens=replay_max_tokens(spec, config), seed=config.seed)
            messages = ({"role": "system", "content": deployment}, {"role": "user", "content": prompt.text})
            key = input_key("domain", messages, own.to_dict(), labels[TARGET])
            planned.append(PlannedRequest(Request(key, messages, own), prompt, "replay", target_of(prompt, spec),
                                          DOMAIN_TEMPLATE, "", _hash(""), TARGET))
        messages = ({"role": "system", "content": conforming}, {"role": "user", "content": prompt.text})
        for r in range(0 if prompt.id in skip else 1 + (rounds or {}).get(prompt.id, 0)):
            sampled = replace(params, seed=config.seed + 1000 * r)
            key = input_key("response", messages, sampled.to_dict(), labels[GENERATOR], *([r] if r else []))
            planned.append(PlannedRequest(Request(key, messages, sampled), prompt, "conforming", None, "conforming",
                                          hashes["conforming"], _hash(conforming), GENERATOR, r))
        if config.violating == "plain":  # the target model as it is, with its own default system prompt
            messages = ({"role": "user", "content": prompt.text},)
            key = input_key("plain", messages, params.to_dict(), labels[TARGET])
            planned.append(PlannedRequest(Request(key, messages, params), prompt, "violating", None, "plain", "",
                                          _hash(""), TARGET))
            continue
        for target in violation_targets(spec, prompt, config.k):
            if target.id not in violating_systems:
                violating_systems[target.id] = render_template("violating", config.templates, spec=spec, target=target)
            system = violating_systems[target.id]
            one = replace(params, n=1)
            messages = ({"role": "system", "content": system}, {"role": "user", "content": prompt.text})
            key = input_key("response", messages, one.to_dict(), labels[GENERATOR])
            planned.append(PlannedRequest(Request(key, messages, one), prompt, "violating", target, "violating",
                                          hashes["violating"], _hash(system)))
    return planned


def generate_responses(spec: Spec, prompts: list[PromptRecord], config: RunConfig, run: RunFolder,
                       get_backend: Callable[[str], object], labels: dict[str, str],
                       on_progress: Callable | None = None,
                       rounds: dict[str, int] | None = None) -> tuple[list[ResponseRecord], int]:
    """Every planned response and demonstration, generating only the missing ones; returns (records,
    requests made). `get_backend(role)` gives the generator's or the target model's backend."""
    shown = demonstrations(spec, prompts, config) if config.demonstrations else []
    planned = plan_requests(spec, prompts, config, labels, rounds, frozenset(d.prompt_id for d in shown))
    by_key = {p.request.key: p for p in planned}

    def to_records(result) -> list[dict]:
        plan = by_key[result.request.key]
        backend = get_backend(plan.role)
        return [ResponseRecord(
            id=f"{result.request.key}-{i}", request=result.request.key, prompt_id=plan.prompt.id,
            prompt=plan.prompt.text, split=plan.prompt.split, kind=plan.kind,
            target=plan.target.id if plan.target else None, target_kind=plan.target.kind if plan.target else None,
            sample=i, text=c.text, template=plan.template, template_hash=plan.template_hash,
            system_prompt_hash=plan.system_prompt_hash, backend=backend.name, model=backend.model,
            params=result.request.params.to_dict(), seed=result.request.params.seed,
            prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens, finish_reason=c.finish_reason,
            latency_s=round(c.latency_s, 3), created=now(), round=plan.round).to_dict()
            for i, c in enumerate(result.completions)]

    def is_done(request: Request, done: dict) -> bool:
        return all(f"{request.key}-{i}" in done for i in range(request.params.n))

    def run_requests(pending: list[Request]):
        for role in (GENERATOR, TARGET):  # the generator's requests first, then the target model's
            mine = [r for r in pending if by_key[r.key].role == role]
            if mine:
                yield from get_backend(role).complete(mine)

    store = run.store("responses")
    done, made = append_missing(store, [p.request for p in planned], run_requests, to_records, is_done,
                                stage="responses", on_progress=on_progress)
    ids = [f"{p.request.key}-{i}" for p in planned for i in range(p.request.params.n)]
    store.append([d.to_dict() for d in shown if d.id not in done])
    for d in shown:
        done.setdefault(d.id, d.to_dict())
    ids += [d.id for d in shown]
    run.finish_stage("responses", ids)
    return [ResponseRecord.from_dict(done[i]) for i in ids], made


def asks_about(spec: Spec, prompt: PromptRecord) -> str | None:
    """"name" or "maker" when the prompt asks who the assistant is or who made it, else None."""
    from persona.claims import IDENTITY_QUESTION, MAKER_QUESTION

    if spec.identity is None:
        return None
    maker = spec.identity.maker and MAKER_QUESTION.search(prompt.text)
    if maker:
        return "maker"
    if prompt.source in IDENTITY_SOURCES or IDENTITY_QUESTION.search(prompt.text):
        return "name"
    return None


def identity_answers(spec: Spec, templates_dir=None) -> dict[str, list[str]]:
    """{"name": [...], "maker": [...]} from templates/identity_answers.j2."""
    answers: dict[str, list[str]] = {"name": [], "maker": []}
    if spec.identity is None:
        return answers
    for match in tagged_lines("identity_answers", templates_dir, ANSWER_LINE, "'[name] answer' or '[maker] answer'",
                              "start every line with [name] or [maker]", spec=spec):
        answers[match["asks"]].append(match["text"])
    if not answers["maker"]:
        answers["maker"] = answers["name"]
    return answers


def identity_contexts(spec: Spec, templates_dir=None) -> list[tuple[str, object]]:
    """[("turns", [messages]) | ("prefix", text) | ("suffix", text)] from templates/identity_contexts.j2."""
    if spec.identity is None:
        return []

    def turns(match) -> list:
        return [TURN.match(t.strip()) for t in match["text"].split("||")] if match["kind"] == "turns" else []

    def valid(match) -> bool:  # a [turns] line: every turn "role: text", the last one the assistant's
        found = turns(match)
        return all(found) and not (found and found[-1]["role"] != "assistant")

    contexts: list[tuple[str, object]] = []
    for match in tagged_lines("identity_contexts", templates_dir, CONTEXT_LINE,
                              "'[turns] user: ... || assistant: ...', '[prefix] ...' or '[suffix] ...'",
                              "a [turns] line ends with an assistant turn", valid, spec=spec):
        if match["kind"] == "turns":
            contexts.append(("turns", [{"role": t["role"], "content": t["text"]} for t in turns(match)]))
        else:
            contexts.append((match["kind"], match["text"]))
    return contexts


def in_context(question: str, context: tuple[str, object] | None) -> tuple[str, tuple]:
    """(the user's message, the turns before it) for a question asked in a context."""
    if context is None:
        return question, ()
    kind, value = context
    if kind == "turns":
        return question, tuple(value)
    return (f"{value}\n{question}" if kind == "prefix" else f"{question} {value}"), ()


_skipped: set[str] = set()


def demonstrations(spec: Spec, prompts: list[PromptRecord], config: RunConfig) -> list[ResponseRecord]:
    """max(k, DEMONSTRATIONS_PER_QUESTION) answers stating the identity for every identity question - the first
    asked plainly, the others in one of templates/identity_contexts.j2's conversations - and each spec
    example's own answer for its prompt.
    Answers and contexts rotate from a place fixed by the prompt's id."""
    out: list[ResponseRecord] = []
    examples = {e.prompt.strip(): e.response for e in spec.examples}
    answers = identity_answers(spec, config.templates)
    contexts = identity_contexts(spec, config.templates)
    if spec.identity is None and spec.spec_hash not in _skipped:
        _skipped.add(spec.spec_hash)
        log.warning("%s has no identity (name and maker): identity demonstrations are skipped", spec.path)
    answers_hash = template_hash("identity_answers", config.templates)
    for prompt in prompts:
        if prompt.source == REPLAY_SOURCE:
            continue
        shown, template, target = [], "identity_answers", "identity"
        start = int(hashlib.sha256(prompt.id.encode()).hexdigest()[:8], 16)
        if prompt.text.strip() in examples:
            shown, template, target = [(examples[prompt.text.strip()], None)], "example", None
        elif (asks := asks_about(spec, prompt)) and answers[asks]:
            pool = answers[asks]
            for i in range(min(max(config.k, DEMONSTRATIONS_PER_QUESTION), len(pool))):
                context = contexts[(start + i) % len(contexts)] if i and contexts else None
                shown.append((pool[(start + i) % len(pool)], context))
        for i, (text, context) in enumerate(shown):
            question, turns = in_context(prompt.text, context)
            key = input_key("demonstration", question, text, *([list(turns)] if turns else []))
            out.append(ResponseRecord(
                id=f"{key}-0", request=key, prompt_id=prompt.id, prompt=question, split=prompt.split,
                kind="demonstration", target=target, target_kind=target, sample=i, text=text, template=template,
                template_hash=answers_hash if template == "identity_answers" else spec.spec_hash[:16],
                system_prompt_hash=_hash(""), backend="spec", model=spec.name, params={}, seed=None,
                prompt_tokens=0, completion_tokens=len(text.split()), finish_reason="stop", latency_s=0.0,
                created=now(), context=turns, asked_as=context[0] if context else ""))
    return out


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
