"""Probe prompts: what the model will be asked. Stage 1 of `persona generate`.

Sources, in this order:
  * the spec's `probes.seeds` and `probes.adversarial`;
  * built-in probes from templates/adversarial.j2 (who-are-you questions, break-character attempts,
    pressure to claim another maker, pressure to break each constraint, prompt injection);
  * prompts synthesized by the backend through templates/probes.j2, `prompts_per_target` for every
    trait, style rule, constraint and ethics item, so every one of them gets tested.
They are deduplicated on normalised text (case, punctuation and spacing ignored) and split into train
and a held-out eval split by a hash of that text: the split of a prompt never changes between runs, and
training never sees the eval prompts.

    prompts, made = build_prompts(spec, config, RunFolder("runs/brand"), get_backend=lambda: load_backend("hf"),
                                  backend_label="hf:default")
    {"id": "3f9c...", "text": "Who made you?", "source": "identity", "target": null, "split": "eval", ...}
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from persona.backends import Request, SamplingParams
from persona.config import RunConfig
from persona.run import RunFolder
from persona.spec import IDENTITY_TARGET, Spec, normalize
from persona.store import append_missing, input_key, now
from persona.templates import render_template, tagged_lines, template_hash

ADVERSARIAL_SOURCES = ("adversarial", "break", "origin", "constraint", "injection")
REPLAY_SOURCE = "replay"  # general prompts the target model answers itself (persona/data/replay_prompts.txt)
DATA = Path(__file__).parent / "data"
PREAMBLE = re.compile(r"^(here (are|is)|sure\b|certainly\b|of course\b|okay\b|text\b|message \d)", re.I)
TEMPLATE_LINE = re.compile(r"^\[(?P<source>[a-z]+)(?::(?P<target>[a-z0-9][a-z0-9_.-]*))?\]\s+(?P<text>\S.*)$")


@dataclass(frozen=True)
class PromptRecord:
    id: str  # hash of the normalised text
    text: str
    source: str  # seed | adversarial | example | identity | break | origin | constraint | injection | synthesized | replay
    target: str | None  # the trait/constraint/... id it was written to test, if any
    split: str  # train | eval
    provenance: dict = field(default_factory=dict)

    @property
    def adversarial(self) -> bool:
        return self.source in ADVERSARIAL_SOURCES

    def to_dict(self) -> dict:
        return {**asdict(self), "adversarial": self.adversarial}

    @classmethod
    def from_dict(cls, data: dict) -> "PromptRecord":
        return cls(data["id"], data["text"], data["source"], data.get("target"), data["split"],
                   data.get("provenance", {}))


def split_of(normalized: str, eval_fraction: float) -> str:
    bucket = int(hashlib.sha256(normalized.encode("utf-8")).hexdigest()[:8], 16) / 2**32
    return "eval" if bucket < eval_fraction else "train"


def builtin_probes(spec: Spec, templates_dir) -> list[tuple[str, str, str | None]]:
    """(text, source, target) from templates/adversarial.j2."""
    probes = []
    for match in tagged_lines("adversarial", templates_dir, TEMPLATE_LINE, "'[category] prompt'",
                              "start every line with [identity], [break], [origin], [constraint] or [injection]",
                              spec=spec):
        target = match["target"]
        if target is None and spec.identity is not None and match["source"] in ("identity", "break", "origin"):
            target = IDENTITY_TARGET  # these probe the identity itself
        probes.append((match["text"], match["source"], target))
    return probes


def synthesis_requests(spec: Spec, config: RunConfig, backend_label: str) -> list[tuple[Request, str]]:
    """One request per target asking for `prompts_per_target` user messages that test it."""
    n = config.prompts_per_target
    params = SamplingParams(n=1, temperature=0.9, top_p=0.95, max_tokens=min(48 * n + 32, 768), seed=config.seed)
    requests = []
    for target in spec.targets():
        text = render_template("probes", config.templates, spec=spec, target=target, n=n,
                               topics=list(spec.probes.topics))
        messages = ({"role": "user", "content": text},)
        key = input_key("synthesis", messages, params.to_dict(), backend_label)
        requests.append((Request(key, messages, params), target.id))
    return requests


def parse_synthesized(text: str, n: int) -> list[str]:
    """The first `n` usable lines of a synthesis reply, without bullets, numbers or quotes."""
    prompts = []
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:[-*•]|\d+[.)]|\(\d+\))\s*", "", line).strip().strip('"“”\'').strip()
        if not 8 <= len(line) <= 500 or len(line.split()) < 3 or line.endswith(":"):
            continue
        if PREAMBLE.match(line):  # "Here are 3 messages ...", "Sure! ..."
            continue
        prompts.append(line)
    return prompts[:n]


def fixed_candidates(spec: Spec, templates_dir) -> list[tuple[str, str, str | None, dict]]:
    """(text, source, target, provenance) of every prompt that needs no backend: the spec's seeds and
    adversarial prompts, then the built-in probes."""
    candidates: list[tuple[str, str, str | None, dict]] = []
    for seed in spec.probes.seeds:
        candidates.append((seed, "seed", None, {"from": spec.path}))
    for prompt in spec.probes.adversarial:
        candidates.append((prompt, "adversarial", None, {"from": spec.path}))
    for example in spec.examples:
        candidates.append((example.prompt, "example", None, {"from": spec.path}))
    adversarial_hash = template_hash("adversarial", templates_dir)
    for text, source, target in builtin_probes(spec, templates_dir):
        candidates.append((text, source, target, {"template": "adversarial", "template_hash": adversarial_hash}))
    return candidates


def build_prompts(spec: Spec, config: RunConfig, run: RunFolder, get_backend: Callable,
                  backend_label: str, on_progress: Callable | None = None) -> tuple[list[PromptRecord], int]:
    """All probe prompts for this run, saved to the run's prompts store; returns (prompts, synthesis requests made)."""
    candidates = fixed_candidates(spec, config.templates)
    made = 0
    if config.synthesize and config.prompts_per_target > 0:
        requests = synthesis_requests(spec, config, backend_label)

        def to_records(result) -> list[dict]:
            c = result.completions[0]
            return [{"id": result.request.key, "text": c.text, "backend": get_backend().name,
                     "model": get_backend().model, "params": result.request.params.to_dict(),
                     "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                     "latency_s": round(c.latency_s, 3), "created": now()}]

        done, made = append_missing(run.store("synthesis"), [r for r, _ in requests],
                                    lambda pending: get_backend().complete(pending), to_records,
                                    stage="prompts", on_progress=on_progress)
        probes_hash = template_hash("probes", config.templates)
        for request, target in requests:
            reply = done[request.key]
            for text in parse_synthesized(reply["text"], config.prompts_per_target):
                candidates.append((text, "synthesized", target, {
                    "template": "probes", "template_hash": probes_hash, "request": request.key,
                    "backend": reply["backend"], "model": reply["model"], "params": reply["params"]}))

    selected = _select(_dedupe(candidates, config.eval_fraction), config.eval_fraction, config.limit)
    selected += replay_prompts(config.replay_count)  # --limit scales replay too
    store = run.store("prompts")
    saved = store.load(repair=True)
    store.append([r.to_dict() for r in selected if r.id not in saved])
    run.finish_stage("prompts", [r.id for r in selected])
    return selected, made


def replay_prompts(n: int) -> list[PromptRecord]:
    """The first n shipped general prompts, all in the train split (the eval asks its own, eval_general.txt)."""
    lines = [line.strip() for line in (DATA / "replay_prompts.txt").read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#")]
    return [PromptRecord(hashlib.sha256(f"replay|{normalize(text)}".encode()).hexdigest()[:16], text, REPLAY_SOURCE,
                         None, "train", {"from": "persona/data/replay_prompts.txt"}) for text in lines[:max(0, n)]]


def planned_prompts(spec: Spec, templates_dir=None, eval_fraction: float = 0.2) -> list[PromptRecord]:
    """The prompts persona would make for `spec` without synthesis (no backend, nothing saved): what
    `persona eval` holds out when there is no run folder."""
    return _select(_dedupe(fixed_candidates(spec, templates_dir), eval_fraction), eval_fraction, None)


def _dedupe(candidates: list[tuple[str, str, str | None, dict]], eval_fraction: float) -> list[PromptRecord]:
    """One record per normalised text (the first source of a duplicate wins), split by a hash of the text."""
    records: dict[str, PromptRecord] = {}
    for text, source, target, provenance in candidates:
        norm = normalize(text)
        if not norm:
            continue
        key = hashlib.sha256(norm.encode("utf-8")).hexdigest()[:16]
        if key not in records:
            records[key] = PromptRecord(key, text.strip(), source, target, split_of(norm, eval_fraction), provenance)
    return list(records.values())


def _select(records: list[PromptRecord], eval_fraction: float, limit: int | None) -> list[PromptRecord]:
    """Make sure both splits are non-empty, then apply --limit: round-robin over sources and targets, so a
    quick run still mixes seeds, identity questions, attacks and synthesized prompts."""
    splits = {r.split for r in records}
    if len(records) >= 2 and eval_fraction > 0 and splits != {"train", "eval"}:
        missing = "eval" if "eval" not in splits else "train"
        moved = min(records, key=lambda r: r.id)
        records = [replace(r, split=missing) if r is moved else r for r in records]
    if limit is None or limit >= len(records):
        return records
    groups: dict[tuple, list[PromptRecord]] = {}
    for r in records:
        groups.setdefault((r.source, r.target), []).append(r)
    order: list[PromptRecord] = []
    while any(groups.values()):
        for members in groups.values():
            if members:
                order.append(members.pop(0))
    n_eval = min(sum(r.split == "eval" for r in order), max(1, round(limit * eval_fraction)))
    if eval_fraction == 0 or limit < 2:
        n_eval = 0
    chosen_eval = [r for r in order if r.split == "eval"][:n_eval]
    chosen_train = [r for r in order if r.split == "train"][:limit - len(chosen_eval)]
    chosen = {r.id for r in chosen_eval + chosen_train}
    return [r for r in records if r.id in chosen]
