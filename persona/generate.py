"""`persona generate`: spec -> probe prompts -> conforming and violating responses, in a resumable run folder.

    from persona.config import RunConfig
    from persona.generate import generate
    summary = generate(load_spec("identities/brand.yaml"), RunConfig(limit=20))
    summary.run_dir, summary.responses, summary.requests_made

Each stage lives in its own module (persona.prompts, persona.responses) and keeps its own JSONL file; this
module only wires them together, loads the backend lazily (a finished run never loads a model) and
counts what happened.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from persona.backends import load_backend
from persona.config import RunConfig
from persona.prompts import build_prompts, builtin_probes
from persona.responses import generate_responses
from persona.spec import Spec
from persona.store import open_run
from persona.templates import render_template


def backend_label(config: RunConfig) -> str:
    """What response keys depend on: the backend and the model, as configured (resolving no files)."""
    model = config.model
    if config.backend in ("hf", "vllm") and not model:
        from persona.backends.hf import DEFAULT_MODEL

        model = DEFAULT_MODEL
    return f"{config.backend}:{model or 'default'}"


def run_dir_for(spec: Spec, config: RunConfig) -> Path:
    return Path(config.out) if config.out else Path("runs") / spec.name


@dataclass
class GenerationSummary:
    run_dir: Path
    prompts_train: int = 0
    prompts_eval: int = 0
    conforming: int = 0
    violating: int = 0
    requests_made: int = 0  # backend requests this run (0 when everything was already done)
    tokens: int = 0  # completion tokens generated this run
    seconds: float = 0.0
    targets_covered: set = field(default_factory=set)

    @property
    def responses(self) -> int:
        return self.conforming + self.violating


def generate(spec: Spec, config: RunConfig, on_progress: Callable | None = None) -> GenerationSummary:
    started = time.perf_counter()
    run_dir = open_run(run_dir_for(spec, config), spec)
    summary = GenerationSummary(run_dir)
    backend = None

    def get_backend():
        nonlocal backend
        if backend is None:
            backend = load_backend(config.backend, **config.backend_kwargs())
        return backend

    def progress(stage: str, done: int, total: int, tokens: int) -> None:
        summary.tokens += tokens
        if on_progress:
            on_progress(stage, done, total, tokens)

    label = backend_label(config)
    try:
        prompts, synthesis_made = build_prompts(spec, config, run_dir, get_backend, label, progress)
        responses, responses_made = generate_responses(spec, prompts, config, run_dir, get_backend, label, progress)
    finally:
        if backend is not None:
            backend.close()
    summary.requests_made = synthesis_made + responses_made
    summary.prompts_train = sum(p.split == "train" for p in prompts)
    summary.prompts_eval = sum(p.split == "eval" for p in prompts)
    summary.conforming = sum(r.kind == "conforming" for r in responses)
    summary.violating = sum(r.kind == "violating" for r in responses)
    summary.targets_covered = {r.target for r in responses if r.target}
    summary.seconds = time.perf_counter() - started
    return summary


@dataclass
class DryRun:
    run_dir: Path
    system_prompt: str  # conforming
    violating_example: str
    probes_example: str
    builtin_probes: int
    seed_prompts: int
    synthesis_requests: int
    max_prompts: int
    response_requests: int  # at most


def dry_run(spec: Spec, config: RunConfig) -> DryRun:
    """What `generate` would send and how many requests it would make at most, without a backend."""
    targets = spec.targets()
    builtin = len(builtin_probes(spec, config.templates))
    seeds = len(spec.probes.seeds) + len(spec.probes.adversarial)
    synth = len(targets) if config.synthesize and config.prompts_per_target > 0 else 0
    prompts = builtin + seeds + synth * config.prompts_per_target
    if config.limit is not None:
        prompts = min(prompts, config.limit)
    first = targets[0]
    return DryRun(
        run_dir=run_dir_for(spec, config),
        system_prompt=render_template("conforming", config.templates, spec=spec),
        violating_example=render_template("violating", config.templates, spec=spec, target=first),
        probes_example=render_template("probes", config.templates, spec=spec, target=first,
                                       n=config.prompts_per_target, topics=list(spec.probes.topics)),
        builtin_probes=builtin, seed_prompts=seeds, synthesis_requests=synth, max_prompts=prompts,
        response_requests=prompts * (1 + min(config.k, len(targets))),
    )
