"""`persona run job.yaml`: the whole pipeline from one file - validate, generate + judge + build, train (one
method or a sequence, e.g. sft then dpo from it), eval, report.

    # jobs/demo.yaml
    spec: identities/brand.yaml          # paths are relative to the folder persona runs in
    generate: {k: 1, replay: 24}         # the keys of a run config (persona.config.RunConfig)
    judge: rules                         # or {name: llm, backend: openai, model: ..., base_url: ..., api_key_env: ...}
    build: {margin: 2.0}                 # persona.config.BuildSettings, and pairwise
    train:
      - method: sft
      - {method: dpo, from: sft, set: {beta: 0.1}}   # from: an earlier step's method, or an output folder
      - {method: dpo, from: sft, refine: {k: 4}}     # on-policy rounds instead (persona refine; keys of RefineSettings)
    eval: {judge: rules}                 # persona.eval.EvalSettings; false: no eval
    report: true

Every key is checked before anything runs, each problem at its file:line:col. A stage whose output is
current is skipped: generation resumes record by record; a training step whose method, settings, start and
data are unchanged is not retrained (one that was interrupted resumes from its checkpoint); an eval of an
unchanged model with unchanged settings is not rerun.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from persona.errors import PersonaError, SpecError
from persona.validation import schema_problems
from persona.yaml_source import read_yaml

from persona.recipe import read_mark, step_key, train_key, write_mark


def _schema() -> dict:
    """The job file's JSON Schema, from the settings dataclasses: generate (RunConfig), judge (JudgeSettings),
    build (BuildSettings), each train step (TrainSettings, and refine: RefineSettings), eval (EvalSettings)."""
    from persona.config import BuildSettings, RunConfig
    from persona.eval import EvalSettings
    from persona.judges import FLAG_OPTIONS
    from persona.methods import METHODS
    from persona.options import schema_of
    from persona.refine import RefineSettings
    from persona.train import TrainSettings

    build = schema_of(BuildSettings)
    build["properties"]["pairwise"] = {"type": "boolean"}
    judge = {"type": ["string", "object"], "additionalProperties": False, "required": ["name"],  # a name, or a
             "properties": {k: {"type": ["string", "null"]} for k in ("name", *FLAG_OPTIONS)}}  # mapping with options
    refine = schema_of(RefineSettings, skip=("method",))
    refine["type"] = ["object", "boolean"]  # true: a round with the defaults
    step = schema_of(TrainSettings)
    step["required"] = ["method"]
    step["properties"].update({"method": {"enum": list(METHODS)}, "refine": refine})  # a step names its method
    return {"type": "object", "additionalProperties": False, "required": ["spec"], "properties": {
        "spec": {"type": "string"},
        "generate": schema_of(RunConfig),
        "judge": judge,
        "build": build,
        "train": {"type": "array", "items": step},
        "eval": {**schema_of(EvalSettings), "type": ["object", "boolean"]},  # false: no eval
        "report": {"type": "boolean"},
    }}


def step_settings(step: dict):
    """A job file's train step as persona.train.TrainSettings (its keys are the settings' file keys)."""
    from dataclasses import fields

    from persona.options import key_of
    from persona.train import TrainSettings

    return TrainSettings(**{f.name: step[key_of(f)] for f in fields(TrainSettings)
                            if key_of(f) in step and step[key_of(f)] is not None})


@dataclass
class Job:
    file: str
    spec: str
    generate: dict = field(default_factory=dict)
    judge: str = "rules"
    judge_options: dict = field(default_factory=dict)
    build: dict = field(default_factory=dict)
    pairwise: bool = False
    train: list = field(default_factory=list)
    eval: dict | None = field(default_factory=dict)
    report: bool = True


def load_job(path: str | Path) -> Job:
    """The job file, every key checked: a SpecError with each problem at its file:line:col."""
    from persona.config import RunConfig, check_applicable
    from persona.config import BuildSettings
    from persona.judges import judge_options
    from persona.methods import check_settings

    doc = read_yaml(Path(path), str(path))
    if doc.data is None:
        doc.data = {}
    problems = schema_problems(doc, _schema())
    if not isinstance(doc.data, dict) or any(not p.path for p in problems):
        raise SpecError(problems, then="run the job again")
    # every problem in one pass: the checks below run on each section the schema found no fault in
    broken = {re.split(r"[.\[]", p.path)[0] for p in problems}
    data = {k: v for k, v in doc.data.items() if k not in broken}
    data.setdefault("spec", doc.data.get("spec", ""))

    def check(where: tuple, make: Callable) -> object:
        try:
            return make()
        except PersonaError as e:
            section = data.get(where[0]) if where else None
            key = e.message.split(" ", 1)[0]  # "system_prompt 'spce' is not ...": the key it is about
            at = where + (key,) if isinstance(section, dict) and key in section else where
            problems.append(doc.problem(at, e.message.split(" ", 1)[1] if at != where else e.message, e.hint))

    generate = dict(data.get("generate") or {})
    config = check(("generate",) if "generate" in data else (), lambda: RunConfig(**generate))
    if config is not None:
        check(("generate",), lambda: check_applicable(config))
    judge = data.get("judge", "rules")
    judge = judge if isinstance(judge, dict) else {"name": judge}
    options = {k: v for k, v in judge.items() if k != "name" and v is not None}
    checked = check(("judge",) if "judge" in data else (), lambda: judge_options(judge["name"], **options))
    kind = str(judge["name"]).partition(":")[0]
    if checked is not None and kind not in ("none", "reward"):
        import difflib

        from persona.judges import JUDGES

        if kind not in JUDGES:
            close = difflib.get_close_matches(kind, list(JUDGES), n=1)
            problems.append(doc.problem(("judge",), f"unknown judge '{kind}'",
                                        (f"did you mean '{close[0]}'? " if close else "")
                                        + "judges: " + ", ".join(JUDGES) + ", reward:PATH or none"))
    build = dict(data.get("build") or {})
    pairwise = bool(build.pop("pairwise", False))
    check(("build",), lambda: BuildSettings(**build))
    labels: list[str] = []
    for i, step in enumerate(data.get("train") or []):
        start = step.get("from")
        if start is not None and start not in labels and not Path(start).is_dir():
            problems.append(doc.problem(("train", i, "from"), f"'{start}' is neither an earlier step's method "
                                        f"({', '.join(labels) or 'none before this one'}) nor an output folder",
                                        "name a method trained above, e.g. from: sft, or a folder of persona train"))
        for key, message, hint in check_settings(step["method"], step.get("set") or {}):
            problems.append(doc.problem(("train", i, "set", key), message, hint, key=True))
        if step.get("refine") not in (None, False):
            from persona.refine import ROUND_METHODS

            if step["method"] not in ROUND_METHODS:
                problems.append(doc.problem(("train", i, "method"), f"a refine step trains with one of "
                                            f"{', '.join(ROUND_METHODS)}, not {step['method']}", "e.g. method: dpo"))
            if start is None:
                problems.append(doc.problem(("train", i), "a refine step needs from: the trained model it refines",
                                            "e.g. from: sft"))
        labels.append(_label(step, labels))
    evaluation = data.get("eval", {})
    evaluation = {} if evaluation is True else evaluation
    if isinstance(evaluation, dict):
        from persona.eval import EvalSettings

        check(("eval",), lambda: EvalSettings(**evaluation))
    if problems:
        raise SpecError(problems, then="run the job again")
    return Job(str(path), data["spec"], generate, judge["name"], options, build, pairwise,
               list(data.get("train") or []), evaluation if evaluation is not False else None,
               data.get("report", True))


def run_job(job: Job, say: Callable[[str], None], on_progress=None) -> dict:
    """Run every stage of `job`, skipping the current ones; returns {stage: what it did}. `say` gets a line per
    stage ([n/total]) and per logged training step; `on_progress` the generation and eval progress."""
    from persona.config import RunConfig
    from persona.config import BuildSettings
    from persona.pipeline import generate
    from persona.progress import training_log
    from persona.run import RunFolder, TrainOutput
    from persona.spec import load_spec

    done: dict = {}
    spec = load_spec(job.spec)
    config = RunConfig(**job.generate)
    evals = [s for s in job.train if s["method"] != "reward"] if job.eval is not None else []
    total = 1 + len(job.train) + len(evals) + bool(job.report)
    number = iter(range(1, total + 1))

    def stage(text: str) -> None:
        say(f"[{next(number)}/{total}] {text}")

    stage(f"generate {job.spec} (finished records are reused)")
    judge = None if job.judge == "none" else job.judge
    summary = generate(spec, config, on_progress, judge=judge, judge_options=job.judge_options,
                       build=BuildSettings(**job.build), pairwise=job.pairwise)
    run = RunFolder(summary.run_dir)
    done["generate"] = summary
    outputs: dict[str, TrainOutput] = {}
    keys: dict[str, str] = {}
    for i, step in enumerate(job.train):
        method, start = step["method"], step.get("from")
        if step.get("refine") not in (None, False):
            label = _label(step, outputs)
            start_output = outputs.get(start) or TrainOutput(start)
            outputs[label], keys[label] = _refine_step(step, start_output, keys.get(start) or str(start), stage,
                                                       say, on_progress, config.templates)
            done[f"train {label}"] = "refined"
            continue
        start_output = outputs.get(start) if start in outputs else (TrainOutput(start) if start else None)
        label = _label(step, outputs)
        output = TrainOutput(step["output_dir"]) if step.get("output_dir") else run.train_output(
            f"{start_output.label}-{method}" if start_output is not None else method)
        settings = step_settings(step)
        key = train_key(run, settings, keys.get(start) or (str(start) if start else None))
        keys[label] = key
        outputs[label] = output
        stage(f"train {method}" + (f" from {start}" if start else "") + f" -> {output.path}/")
        if output.is_finished() and read_mark(output.path) == key:
            say("  current: same method, settings, start and data; not retrained")
            done[f"train {label}"] = "skipped"
            continue
        from dataclasses import replace

        from persona.train import train_with

        resume = (not output.is_finished() and output.last_checkpoint() is not None and read_mark(output.path) == key)
        if not resume and output.metrics_file.exists():
            output.metrics_file.unlink()  # a stale finished run must not pass for this step's if it is interrupted
        write_mark(output.path, key)  # before training: an interrupted step resumes under the same key
        on_log, on_start = training_log(say, method, start)
        train_with(run.path, replace(settings, output_dir=str(output.path), overwrite=not resume, resume=resume,
                                     start=str(start_output.path) if start_output is not None else None),
                   on_log, on_start)
        done[f"train {label}"] = "trained"
    if job.eval is not None:
        from persona.eval import EvalSettings, evaluate

        settings = EvalSettings(**job.eval)
        done["evals"] = {}  # every evaluated model's metrics, new or current, by the report's label
        evaluated: set = set()
        for label, output in outputs.items():
            if output.settings().get("method") == "reward":
                continue
            folder = output.eval
            key = step_key({"model": keys[label], "eval": job.eval})
            stage(f"eval {output.path}/ (base vs trained)")
            if output.path.resolve() in evaluated:  # rounds that kept their start: that model again
                say("  the same model as a step above (its rounds kept their start); evaluated there")
                continue
            evaluated.add(output.path.resolve())
            if folder.metrics_file.exists() and read_mark(folder.path) == key:
                say("  current: same model and eval settings; not rerun")
                done[f"eval {label}"] = "skipped"
            else:
                done[f"eval {label}"] = evaluate(output.path, job.spec, run.path, None, None, settings,
                                                 config.templates, on_progress)
                write_mark(folder.path, key)
            done["evals"][output.label] = folder.metrics()
    if job.report:
        from persona.report import write_report

        stage("report")
        done["report"] = write_report(run.path, None)
    return done


def _refine_step(step: dict, start, start_key: str, stage, say, on_progress, templates):
    """A `refine:` step: persona refine from `start`; rounds already done are reused (refine resumes), a step
    whose settings changed starts its rounds over. (the kept model, its key)"""
    from persona.progress import training_log
    from persona.refine import RefineSettings, refine
    from persona.run import RefineRounds, TrainOutput

    options = step["refine"] if isinstance(step["refine"], dict) else {}
    settings = RefineSettings(method=step["method"], **options)
    rounds = RefineRounds(step["output_dir"]) if step.get("output_dir") else RefineRounds.beside(start.path,
                                                                                                 step["method"])
    key = step_key({"refine": options, "method": step["method"], "set": step.get("set") or {}, "start": start_key})
    stage(f"refine {step['method']} from {step['from']} -> {rounds.path}/")
    changed = any(rounds.path.glob("round-*")) and read_mark(rounds.path) != key  # rounds made with other settings
    write_mark(rounds.path, key)
    on_log, on_start = training_log(say, step["method"], start.path)
    result = refine(start.path, settings, rounds.path, step.get("set") or {}, overwrite=changed,
                    on_progress=on_progress, on_log=on_log, on_start=on_start, say=lambda text: say("  " + text),
                    templates=templates)
    return TrainOutput(result.output_dir), step_key({"step": key, "kept": str(result.output_dir)})


def _label(step: dict, earlier) -> str:
    """A step's name for later `from:`: its method, after the earlier step it starts from (sft-dpo)."""
    start = step.get("from")
    return f"{start}-{step['method']}" if start in earlier else step["method"]
