"""The wiring of `persona generate`: spec -> probe prompts -> responses -> judgements -> datasets, in a
resumable run folder, and the commands that re-run one stage of an existing run (`persona judge`, `build`).

    from persona.config import RunConfig
    from persona.pipeline import generate
    summary = generate(load_spec("identities/brand.yaml"), RunConfig(limit=20))
    summary.run_dir, summary.responses, summary.requests_made

Each stage lives in its own module (persona.prompts, persona.responses, persona.judgements, persona.dataset)
and keeps its own store in the run folder (persona.run); this module only wires them together, loads the
backend lazily (a finished run never loads a model) and counts what happened. `judge_run` and `build_run`
read the records the earlier stages saved as current (RunFolder.current); they never re-plan them.
`dry_run` says what `generate` would send, without a backend.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

from persona.backends import model_name, place_backend
from persona.config import SYSTEM_PROMPT_MODES, SYSTEM_PROMPT_TEXT, BuildSettings, RunConfig
from persona.dataset import CHOSEN_KINDS, BuildReport, build_datasets, nothing_to_train, system_prompt_text
from persona.errors import PersonaError
from persona.judgements import judge_responses, saved_judgements
from persona.judges import make_judge, pairwise as pairwise_judge
from persona.prompts import REPLAY_SOURCE, build_prompts, builtin_probes
from persona.responses import GENERATOR, TARGET, ResponseRecord, generate_responses
from persona.run import RunFolder
from persona.spec import Spec, load_spec
from persona.templates import render_template


def backend_label(config: RunConfig) -> str:
    """What response keys depend on: the backend and the model, as configured (resolving no files)."""
    return f"{config.backend}:{model_name(config.backend, config.model) or 'default'}"


def target_backend(config: RunConfig) -> str:
    """The backend that runs the model to be trained: target_backend when set, else vLLM when the generator
    runs on it (the same engine, not a second copy of the model in transformers), else a local model (hf);
    the scripted fake in tests."""
    if config.backend == "fake":
        return "fake"
    return config.target_backend or ("vllm" if config.backend == "vllm" else "hf")


def target_label(config: RunConfig) -> str:
    """The model to be trained, which writes replay answers and plain rejected ones."""
    backend = target_backend(config)
    if backend == config.backend and config.target_model is None:
        return backend_label(config)  # the generator is the target model
    return f"{backend}:{model_name(backend, config.target_model) or 'default'}"


def target_kwargs(config: RunConfig) -> dict:
    """load_backend() options of the target model: the generator's settings when both run on one backend
    (the same server, the same vLLM options), else the local model's batch size and dtype."""
    backend = target_backend(config)
    if backend == config.backend:
        return {**config.backend_kwargs(), "model": config.target_model}
    local = {"batch_size": config.batch_size} if backend == "hf" and config.batch_size else {}
    return {"model": config.target_model, **local, **({"dtype": config.dtype} if config.dtype else {})}


def judge_options_for_run(judge: str | None, options: dict | None, config: RunConfig) -> dict | None:
    """The run's settings that the judge takes: its `dtype` (the offline judge scores in it when one is set, else
    in persona.precision's choice) and its Ray cluster (--ray: an llm judge on a local model runs there too)."""
    from persona.judges import JUDGES, options_of

    kind = judge.partition(":")[0] if judge else None
    if kind not in JUDGES:
        return options
    taken = options_of(kind)
    run = {"dtype": config.dtype, "ray": config.ray, "ray_replicas": config.ray_replicas if config.ray else None}
    chosen = {k: v for k, v in run.items() if v is not None and k in taken}
    return {**chosen, **(options or {})} if chosen else options


def run_dir_for(spec: Spec, config: RunConfig) -> Path:
    return Path(config.out) if config.out else Path("runs") / spec.name


@dataclass
class GenerationSummary:
    run_dir: Path
    prompts_train: int = 0
    prompts_eval: int = 0
    conforming: int = 0
    violating: int = 0
    demonstrations: int = 0
    replay: int = 0
    requests_made: int = 0  # backend requests this run (0 when everything was already done)
    tokens: int = 0  # completion tokens generated this run
    seconds: float = 0.0
    targets_covered: set = field(default_factory=set)
    judgements_made: int = 0
    rejection_rounds: int = 0  # rounds of extra conforming samples drawn (rejection sampling)
    build: BuildReport | None = None
    stage_seconds: dict = field(default_factory=dict)  # stage -> wall seconds this run (bench/pipeline.py)
    precision: dict = field(default_factory=dict)  # role -> dtype of its local model and why, in words

    @property
    def responses(self) -> int:
        return self.conforming + self.violating + self.demonstrations + self.replay


def generate(spec: Spec, config: RunConfig, on_progress: Callable | None = None, judge: str | None = "rules",
             judge_options: dict | None = None, build: BuildSettings = BuildSettings(),
             pairwise: bool = False) -> GenerationSummary:
    """All stages; `judge=None` stops after the responses (and draws no rejection-sampling rounds). The run
    folder is locked for the duration: a second process on it gets a clear error, not duplicate work."""
    run = RunFolder(run_dir_for(spec, config))
    with run.lock():
        return _generate(spec, config, run, on_progress, judge, judge_options, build, pairwise)


def _generate(spec: Spec, config: RunConfig, run: RunFolder, on_progress, judge, judge_options, build,
              pairwise) -> GenerationSummary:
    started = time.perf_counter()
    run.open(spec, config=config.to_record())  # no credentials
    summary = GenerationSummary(run.path)
    backends: dict[str, object] = {}
    precision: dict[str, str] = {}  # role -> the dtype its model computes in (persona.precision)
    labels = {GENERATOR: backend_label(config), TARGET: target_label(config)}
    judge_options = judge_options_for_run(judge, judge_options, config)

    def get_backend(role: str = GENERATOR):
        """The generator's backend, or the target model's (the same one when they are the same model)."""
        if role not in backends:
            loading = time.perf_counter()
            if role == TARGET and labels[TARGET] == labels[GENERATOR]:
                backends[TARGET] = get_backend(GENERATOR)
            elif role == TARGET:
                backends[TARGET] = place_backend(target_backend(config), target_kwargs(config), config.ray,
                                                 config.ray_replicas)
            else:
                backends[GENERATOR] = place_backend(config.backend, config.backend_kwargs(), config.ray,
                                                    config.ray_replicas)
            if getattr(backends[role], "dtype", None):  # what the model computed in, for run.json
                from persona.precision import describe

                precision[role] = backends[role].dtype
                summary.precision[role] = describe(getattr(backends[role], "device", "cpu"), precision[role])
                run.update(precision=dict(precision))
            timed["loading models"] = timed.get("loading models", 0.0) + time.perf_counter() - loading
        return backends[role]

    def progress(stage: str, done: int, total: int, tokens: int) -> None:
        summary.tokens += tokens
        if on_progress:
            on_progress(stage, done, total, tokens)

    timed = summary.stage_seconds

    loading_seen = 0.0  # model loading already subtracted from an earlier stage

    def stage(name: str, since: float) -> None:
        """Add the time since `since` to stage `name`, less the model loading that happened meanwhile."""
        nonlocal loading_seen
        loading = timed.get("loading models", 0.0) - loading_seen
        timed[name] = timed.get(name, 0.0) + time.perf_counter() - since - loading
        loading_seen = timed.get("loading models", 0.0)

    run_judge = checker = judgements = None
    try:
        mark = time.perf_counter()
        prompts, synthesis_made = build_prompts(spec, config, run, get_backend, labels[GENERATOR], progress)
        stage("prompts", mark)
        mark = time.perf_counter()
        responses, responses_made = generate_responses(spec, prompts, config, run, get_backend, labels, progress)
        stage("responses", mark)
        if judge is not None:
            mark = time.perf_counter()
            run_judge = make_judge(judge, judge_options, config.templates)
            checker = pairwise_judge(run_judge) if pairwise else None
            judgements, summary.judgements_made = _judge(spec, responses, run, run_judge, judge, judge_options,
                                                         on_progress)
            stage("judging", mark)
            rounds: dict[str, int] = {}
            for r in range(1, math.ceil(config.rejection_budget / config.k) + 1):
                rounds.update({pid: r for pid in unaccepted_prompts(responses, judgements, build.chosen_min)})
                if not any(v == r for v in rounds.values()):
                    break
                summary.rejection_rounds = r
                mark = time.perf_counter()
                responses, made = generate_responses(spec, prompts, config, run, get_backend, labels, progress, rounds)
                responses_made += made
                stage("responses", mark)
                mark = time.perf_counter()
                judgements, made = _judge(spec, responses, run, run_judge, judge, judge_options, on_progress)
                summary.judgements_made += made
                stage("judging", mark)
    except BaseException:
        if run_judge is not None:
            run_judge.close()
        raise
    finally:
        for backend in {id(b): b for b in backends.values()}.values():
            backend.close()
    summary.requests_made = synthesis_made + responses_made
    probes = [p for p in prompts if p.source != REPLAY_SOURCE]
    summary.prompts_train = sum(p.split == "train" for p in probes)
    summary.prompts_eval = sum(p.split == "eval" for p in probes)
    for kind in ("conforming", "violating"):
        setattr(summary, kind, sum(r.kind == kind for r in responses))
    summary.demonstrations = sum(r.kind == "demonstration" for r in responses)
    summary.replay = sum(r.kind == "replay" for r in responses)
    summary.targets_covered = {r.target for r in responses if r.target}
    if run_judge is not None:
        mark = time.perf_counter()
        try:
            system = system_prompt_text(spec, config.system_prompt, config.templates)
            summary.build = build_datasets(spec, responses, judgements, run, replace(build, system_text=system),
                                           checker)
        finally:
            run_judge.close()
        stage("building", mark)
        empty = nothing_to_train(summary.build, run_judge.name, len(responses))
        if empty is not None:
            raise empty
    summary.seconds = time.perf_counter() - started
    return summary


def unaccepted_prompts(responses: list[ResponseRecord], judgements: dict, chosen_min: float) -> list[str]:
    """Probe prompts (not replay) none of whose conforming answers or demonstrations the judge accepted."""
    accepted = {r.prompt_id for r in responses if r.kind in CHOSEN_KINDS and not r.truncated
                and (j := judgements.get(r.id)) and j.get("status") == "ok" and (j.get("overall") or 0) >= chosen_min}
    return sorted({r.prompt_id for r in responses if r.kind == "conforming"} - accepted)


def _judge(spec, responses, run: RunFolder, judge, name: str, options: dict | None, on_progress):
    """Judge what is missing and remember the judge in run.json (for `persona build`)."""
    judgements, made = judge_responses(spec, responses, judge, run, on_progress)
    run.update(judge={"name": name, "options": options or {}, "label": judge.name})
    return judgements, made


def load_run(run_dir: Path, spec_path: str | None = None) -> tuple[Spec, RunConfig, RunFolder, dict]:
    """The spec, settings, folder and run.json of an existing run folder."""
    run = RunFolder(run_dir)
    info = run.info()
    spec = load_spec(spec_path or run.spec_path())
    if spec.name != info.get("identity"):
        raise PersonaError(f"{run_dir} holds a run of identity '{info.get('identity')}', not '{spec.name}'",
                           hint="pass the spec the run was generated from with --spec")
    names = {f.name for f in fields(RunConfig)}
    recorded = {k: v for k, v in info.get("config", {}).items() if k in names}
    system = recorded.get("system_prompt")
    if isinstance(system, str) and system not in SYSTEM_PROMPT_MODES and not system.startswith(SYSTEM_PROMPT_TEXT):
        recorded["system_prompt"] = SYSTEM_PROMPT_TEXT + system  # run.json of a version that took plain text
    config = RunConfig(**recorded)
    return spec, RunConfig(**{**asdict(config), "out": str(run_dir)}), run, info


def current_responses(run: RunFolder) -> list[ResponseRecord]:
    """The responses the run's last generation settled on (saved when its responses stage finished)."""
    return [ResponseRecord.from_dict(r) for r in run.current("responses")]


def judge_run(run_dir: Path, judge_name: str | None = None, judge_options: dict | None = None,
              spec_path: str | None = None, on_progress: Callable | None = None) -> tuple[int, dict]:
    """Judge an existing run's responses (only those not yet judged by this judge); returns (made, counts)."""
    with RunFolder(run_dir).lock():
        return _judge_run(run_dir, judge_name, judge_options, spec_path, on_progress)


def _judge_run(run_dir, judge_name, judge_options, spec_path, on_progress) -> tuple[int, dict]:
    spec, config, run, info = load_run(run_dir, spec_path)
    responses = current_responses(run)
    judge_name = judge_name or info.get("judge", {}).get("name", "rules")
    judge_options = judge_options_for_run(judge_name, judge_options, config)
    judge = make_judge(judge_name, judge_options, config.templates)
    try:
        judgements, made = _judge(spec, responses, run, judge, judge_name, judge_options, on_progress)
    finally:
        judge.close()
    statuses = [j["status"] for j in judgements.values()]
    return made, {"ok": statuses.count("ok"), "unjudged": statuses.count("unjudged"), "judge": judge.name}


def build_run(run_dir: Path, settings: BuildSettings = BuildSettings(), judge_name: str | None = None,
              judge_options: dict | None = None, spec_path: str | None = None, pairwise: bool = False) -> BuildReport:
    """Rebuild the datasets of an existing run from its responses and the judgements of one judge."""
    with RunFolder(run_dir).lock():
        return _build_run(run_dir, settings, judge_name, judge_options, spec_path, pairwise)


def _build_run(run_dir, settings, judge_name, judge_options, spec_path, pairwise) -> BuildReport:
    spec, config, run, info = load_run(run_dir, spec_path)
    responses = current_responses(run)
    recorded = info.get("judge") or {}
    judge_name = judge_name or recorded.get("name")
    if not judge_name:
        raise PersonaError(f"{run_dir} has no judgements yet", hint=f"run: persona judge {run_dir}")
    options = judge_options if judge_options is not None else (recorded.get("options") or {})
    judge = make_judge(judge_name, options, config.templates)  # for the judgement keys; models load lazily
    judgements = saved_judgements(spec, responses, judge, run)
    if not judgements:
        raise PersonaError(f"no judgements by '{judge.name}' in {run_dir}",
                           hint=f"run: persona judge {run_dir} --judge {judge_name}")
    try:
        system = system_prompt_text(spec, config.system_prompt, config.templates)
        report = build_datasets(spec, responses, judgements, run, replace(settings, system_text=system),
                                pairwise_judge(judge) if pairwise else None)
    finally:
        judge.close()
    empty = nothing_to_train(report, judge.name, len(responses))
    if empty is not None:
        raise empty
    return report


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
    precision: str = ""  # the dtype local models (hf) compute in, and why


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
        response_requests=prompts * (1 + (1 if config.violating == "plain" else min(config.k, len(targets))))
        + config.replay_count,
        precision=local_precision(config.dtype),
    )


def local_precision(dtype: str | None) -> str:
    """What a local model would compute in here, in words: "float32 on cpu (avx512_bf16 without AMX)"."""
    import importlib.util

    from persona.precision import compute_dtype, describe

    device = "cpu"
    if importlib.util.find_spec("torch") is not None:
        from persona.precision import default_device

        device = default_device()
    return describe(device, compute_dtype(device, dtype))
