"""`evaluate`: base (or the prompted base) vs trained on the eval's items - load, score retention, answer, judge,
summarise into rows, write metrics.json and the model card. Only this module orchestrates; the parts are the
package's other modules."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from persona.errors import PersonaError
from persona.eval.answers import answer, answering_for, requests_for
from persona.eval.questions import DATA, EvalItem, build_items, held_out_prompts
from persona.eval.retention import name_only_answer, reference_change, retention_scores
from persona.eval.rows import metric_rows_of, summarise, win_rate
from persona.eval.settings import BASELINES, EvalSettings
from persona.metrics import verdict
from persona.precision import key_parts, torch_dtype


def evaluate(model_path: str | Path, spec_path: str | Path, run_dir: str | Path | None = None,
             base: str | None = None, out: str | Path | None = None, settings: EvalSettings = EvalSettings(),
             templates: str | None = None, on_progress: Callable | None = None) -> dict:
    import contextlib

    from persona.models import check_adapter_base, check_trained
    from persona.run import EvalFolder, RunFolder
    from persona.spec import load_spec

    started = time.perf_counter()
    output = check_trained(model_path)
    check_adapter_base(output, base)  # before any work
    spec = load_spec(spec_path)
    run = RunFolder(run_dir) if run_dir else output.run()
    folder = EvalFolder(out) if out else output.eval
    with contextlib.ExitStack() as locks:  # the run's shared base answers and this eval's folder: one writer each
        if run is not None:
            locks.enter_context(run.lock())
        locks.enter_context(folder.lock())
        return _evaluate(output, spec, run, folder, base, settings, templates, on_progress, started)


def _evaluate(output, spec, run, folder, base, settings, templates, on_progress, started) -> dict:
    from persona.answering import load_model
    from persona.judges import IN_CHARACTER, JudgeItem, make_judge
    from persona.models import template_default_system
    from persona.cards import write_model_card

    trained_info = output.settings()
    probes = held_out_prompts(spec, run, templates)
    items = build_items(spec, probes, settings.limit, settings)
    judge = make_judge(settings.judge, None, templates)
    store = folder.answers
    # the base model's work is shared by every model evaluated against it (same prompts, same settings)
    base_store = run.base_answers if run is not None else store
    base_scores = run.base_scores if run is not None else folder.base_scores

    base_name = base if base is not None else trained_info.get("base_model")
    prompt = baseline_prompt(spec, settings, templates)
    from persona.answering import check_options

    check_options(settings.backend, settings.backend_options)  # before any model loads
    precision = settings.precision()
    answers, retention, defaults, work = {}, {}, {}, {"base_generations": 0, "base_scoring_passes": 0}
    finishes: dict[str, dict] = {}
    for label, with_prompt in columns(settings.baseline, prompt):
        kind = "trained" if label == "trained" else "base"  # the prompted base is the base model, prompted
        if kind == "base":
            cached = _cached_base(base_name, items, settings, base_store, base_scores, spec, with_prompt)
            if cached is not None:
                records, retention[label], defaults[label] = cached
                answers[label] = {k: r["text"] for k, r in records.items()}
                finishes[label] = {k: r.get("finish_reason") for k, r in records.items()}
                saved = store.load(repair=True)
                store.append([{**r, "model": label} for r in records.values() if r["id"] not in saved])
                continue
        lm, tokenizer, name = load_model(kind, output.path, base_name, precision["device"])
        if with_prompt is not None:  # the prompted base: its template injects the deployment prompt
            from persona.models import with_default_system

            tokenizer.chat_template = with_default_system(tokenizer, with_prompt)
            name = _prompted(name, with_prompt)
        defaults[label] = template_default_system(tokenizer)
        # scored first, in the scoring dtype; then cast to the generation dtype to answer
        retention[label] = retention_scores(lm.to(torch_dtype(precision["scoring"])), tokenizer, settings.limit,
                                            spec.references, name_only_answer(spec))
        backend = answering_for(kind, lm, tokenizer, name, settings, output, folder, base_name)
        target = base_store if kind == "base" else store
        before = len(target.load())
        records = answer(backend, label, items, settings, target, on_progress, model=name)
        if kind == "base":
            work["base_generations"] += len(target.load()) - before
            if base_store is not store:  # the report reads every model's answers from one file
                saved = store.load(repair=True)
                store.append([{**r, "model": label} for r in records.values() if r["id"] not in saved])
        answers[label] = {k: r["text"] for k, r in records.items()}
        finishes[label] = {k: r.get("finish_reason") for k, r in records.items()}
        if kind == "base":
            work["base_scoring_passes"] += 1
            base_scores.put(base_key(name, settings, spec), {**retention[label], "template_default": defaults[label]})
        backend.close()
        del backend, lm

    verdicts: dict[str, dict] = {}
    for label in answers:
        judge_items = [JudgeItem(f"{label}:{i.id}", i.prompt, answers[label][i.id]) for i in items]
        for ji, v in judge.judge(spec, judge_items):
            verdicts[ji.key] = v.to_dict()
    metrics = {"spec": spec.name, "model": str(output.path), "base_model": base_name or "default",
               "judge": judge.name, "settings": _recorded(settings), "items": len(items),
               "held_out_prompts": len([i for i in items if i.kind == "probe"]), "retention": retention,
               "template_default": defaults, "work": work, "precision": precision,
               "baseline": settings.baseline, "baseline_prompt": prompt}
    from persona.calibration import target_accuracy

    # the judge's accuracy per target on persona's hand-labelled set, where it has labels for this identity: a
    # target it does not judge better than chance is counted from its behaviour tests only
    metrics["judge_accuracy"] = accuracy = target_accuracy(judge, spec)
    for label in ("base", "trained"):
        metrics[label] = summarise(spec, items, answers[label], {i.id: verdicts[f"{label}:{i.id}"] for i in items},
                                   IN_CHARACTER, finishes[label], accuracy)
    metrics["win_rate"] = win_rate(judge, spec, [i for i in items if i.kind == "probe"], answers, verdicts)
    if "prompted" in retention:
        metrics["prompted"] = summarise(spec, items, answers["prompted"],
                                        {i.id: verdicts[f"prompted:{i.id}"] for i in items}, IN_CHARACTER,
                                        finishes["prompted"], accuracy)
    b, t = retention["base"]["perplexity"], retention["trained"]["perplexity"]
    metrics["retention"]["perplexity_change"] = round((t - b) / b, 4)
    metrics["retention"]["reference_change"] = reference_change(retention["base"].get("reference_nlls") or [],
                                                                retention["trained"].get("reference_nlls") or [])
    rows = metric_rows_of(metrics)
    metrics["rows"] = [r.to_dict() for r in rows]
    metrics["verdict"] = verdict(rows, judge.name, metrics["retention"]["reference_change"])
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    folder.write_metrics(metrics)
    if output.is_finished():
        write_model_card(output, metrics)
    judge.close()
    return metrics


def columns(baseline: str, prompt: str | None) -> list[tuple[str, str | None]]:
    """[(label, the system prompt its template injects)] of the models an eval answers with, in order: `base` is
    the plain base (or, with baseline prompt, the prompted one in its place), `prompted` the prompted base beside
    it (baseline both), then `trained`."""
    if baseline == "both":
        return [("base", None), ("prompted", prompt), ("trained", None)]
    return [("base", prompt), ("trained", None)]


def base_key(name: str, settings: EvalSettings, spec=None) -> str:
    """The key of the base model's retention scores: its name, the shipped data, the spec's references."""
    from persona.store import input_key

    data = "".join((DATA / f).read_text(encoding="utf-8") for f in ("general_text.txt", "general_qa.jsonl"))
    references = [[r.prompt, r.answer] for r in spec.references] + [name_only_answer(spec)] if spec is not None else []
    return input_key("base-scores", name, data, settings.limit, *key_parts(settings.precision()["scoring"]),
                     *([references] if references else []))


def _recorded(settings: EvalSettings) -> dict:
    """The settings as metrics.json records them: no option that holds a secret, no credentials in a URL."""
    from persona.secrets import without_secrets

    return {**asdict(settings), "backend_options": without_secrets(settings.backend_options)}


def baseline_prompt(spec, settings: EvalSettings, templates: str | None = None) -> str | None:
    """The system prompt the prompted baseline gets: the spec's deployment prompt (templates/deployment.j2) for
    `baseline: prompt` or `both`, else None (the base model as it comes)."""
    from persona.config import check_choice
    from persona.dataset import system_prompt_text

    check_choice(settings.baseline, BASELINES, "baseline")
    if settings.baseline in ("prompt", "both") and settings.backend != "hf":
        raise PersonaError(f"baseline {settings.baseline} runs on the hf backend, not on '{settings.backend}'",
                           hint="drop --backend for this comparison (the prompt is set in the base's chat template)")
    return system_prompt_text(spec, "spec", templates) if settings.baseline in ("prompt", "both") else None


def _prompted(name: str, prompt: str) -> str:
    """The prompted base's name in answer keys and the base-score cache: never mixed up with the plain base."""
    import hashlib

    return f"{name} + prompt {hashlib.sha256(prompt.encode()).hexdigest()[:8]}"


def _cached_base(base: str | None, items: list[EvalItem], settings: EvalSettings, store, scores, spec=None,
                 prompt: str | None = None):
    """(answers, retention, template default) of the base model when every one of them is saved already, so the
    base model is not even loaded; else None."""
    from persona.models import resolve_model

    _, name = resolve_model(base)
    if prompt is not None:
        name = _prompted(name, prompt)
    saved = scores.get(base_key(name, settings, spec))
    if saved is None:
        return None
    requests, by_key = requests_for(name, items, settings)
    done = store.load()
    if any(r.key not in done for r in requests):
        return None
    retention = {k: v for k, v in saved.items() if k != "template_default"}
    return {by_key[r.key].id: done[r.key] for r in requests}, retention, saved.get("template_default")
