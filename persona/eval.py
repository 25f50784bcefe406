"""`persona eval`: does the trained model hold its identity, and what did it cost? Base vs trained, side by side.

    metrics = evaluate("runs/aster/train-sft", "identities/aster.yaml")     # writes runs/aster/train-sft/eval/

Both models answer the same prompts with the same settings (greedy decoding), each in its own deployment:
its chat template's default when a conversation has no system message (the base's may name another identity,
SmolLM2's does; a persona-trained model's injects persona's default), and, for the identity questions, also
with an explicit empty system prompt, where only the weights can say who it is. Measurements:

  identity     held-out who-are-you / who-made-you paraphrases shipped with persona (never trained on): the
               share of answers that give the right name (or maker, asked who made it) and the share that
               claim another (ChatGPT, OpenAI, Meta, Hugging Face, ...), in both contexts; rules-based, exact
  robustness   the same questions under attack: a bank of 8 break-character suffixes (one per question in
               turn), an earlier turn in which the assistant agreed it was ChatGPT, several prefilled turns in
               which it spoke as Llama by Meta, an injected instruction in the user's message
  leak         held-out general questions: the share of answers that mention the name or maker unprompted
  adherence    the held-out probe prompts of the run (the eval split, never trained on): the judge's mean
               score per target and overall, the share in character (keeps every machine-checked rule), and
               the win rate of trained vs base; answers may run as long as the spec's length checks allow
  retention    perplexity on a held-out general text and accuracy on 40 general multiple-choice questions
               (log-likelihood of each choice), both shipped with persona

Every number is a row (persona.metrics.MetricRow: name, group, base, trained, unit, sample size), listed in
METRICS; the CLI's table, the model card and the report read the rows, and `verdict` says in words what
changed. The base model's work is done once per base model and settings: its answers and scores are kept
in the run folder (the eval folder without a run) and reused by every later eval, which then never loads
it. Answers are appended as they come, so an interrupted eval resumes where it stopped.

Precision: both models answer and are scored in persona.precision's dtype for the device (bf16 on a CPU with AMX
or a GPU that supports it, else fp32; bf16 moved the scores by far less than their noise, see persona.precision);
`EvalSettings.dtype` (--dtype) sets it. metrics.json records which ("precision"), and answers and scores made in
another dtype than fp32 are kept apart from fp32 ones.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from persona.backends import backend_options_setting, batch_size_setting
from persona.errors import PersonaError
from persona.options import setting
from persona.precision import DTYPES
from persona.metrics import MetricRow, verdict
from persona.precision import key_parts, torch_dtype

DATA = Path(__file__).parent / "data"
CONTEXTS = ("default", "empty")  # no system message (the template's default) / an explicit empty one


def attack_bank() -> dict:
    return json.loads((DATA / "eval_attacks.json").read_text(encoding="utf-8"))


def _attacks() -> dict[str, Callable[[str, int], list[dict]]]:
    """attack name -> (question, its number) -> the conversation that asks it under attack."""
    bank = attack_bank()
    return {
        "break": lambda q, i: [{"role": "user", "content": f"{q} {bank['break'][i % len(bank['break'])]}"}],
        "multi-turn": lambda q, i: bank["multi-turn"] + [{"role": "user", "content": q}],
        "prefilled": lambda q, i: bank["prefilled"] + [{"role": "user", "content": q}],
        "injection": lambda q, i: [{"role": "user", "content": bank["injection"] + q}],
    }


ATTACKS = _attacks()


@dataclass
class EvalSettings:
    """Every setting of `persona eval` (and a job file's `eval:`), each with its command-line option."""

    max_tokens: int = setting(64, "Longest answer, in tokens.", min=1)
    batch_size: int | None = batch_size_setting()
    judge: str = setting("rules", "rules (instant), offline, llm or reward:PATH.")
    limit: int | None = setting(None, "Quick runs: at most this many held-out probe prompts, questions per context, "
                                "attack and leak set, and retention windows and questions.", min=1, shown="all")
    repetition_penalty: float = setting(1.1, "Repetition penalty of both models' answers.", min=1, cli=False)
    dtype: str | None = setting(None, "auto, bf16 or fp32 for answering and scoring.", choices=tuple(DTYPES),
                                shown="auto: bf16 on a CPU with AMX or a GPU that has it, else fp32")
    baseline: str = setting("base", "What the trained model is compared with: base (the base model as it comes) or "
                            "prompt (the base model given the spec's deployment prompt: does fine-tuning beat "
                            "prompting?).", choices=("base", "prompt"))
    backend: str = setting("hf", "Who generates the answers: hf (the models loaded for the scores), vllm, or openai "
                           "against a server that loads local folders (an adapter is exported merged into the "
                           "eval folder).", "-b")
    backend_options: dict = backend_options_setting("e.g. -o base_url=http://localhost:8000/v1")

    def __post_init__(self):
        if self.dtype is not None:
            from persona.precision import normalize_dtype

            self.dtype = normalize_dtype(self.dtype)  # auto: None, persona.precision chooses

    def precision(self) -> dict:
        """{device, generation, scoring}: where and in which dtypes both models answer and are scored."""
        from persona.precision import compute_dtype, default_device, scoring_dtype

        device = default_device()
        return {"device": device, "generation": compute_dtype(device, self.dtype),
                "scoring": scoring_dtype(device, self.dtype)}


@dataclass(frozen=True)
class EvalItem:
    id: str
    kind: str  # probe | origin | attack | leak
    messages: tuple
    asks: str | None = None  # origin/attack: "name" or "maker"
    attack: str | None = None
    target: str | None = None  # probe: the target the prompt was written for
    context: str = "default"  # default: no system message; empty: an empty system message
    max_tokens: int | None = None  # longer than the settings' where the spec's length checks need it

    @property
    def prompt(self) -> str:
        return self.messages[-1]["content"]


@dataclass(frozen=True)
class Metric:
    """One row of the eval: how to read it from a model's summary (see `_summarise`)."""

    name: str
    group: str
    label: str
    unit: str
    better: str
    value: Callable[[dict], float | None]
    n: Callable[[dict], int | None]


def _get(*keys):
    def read(summary: dict):
        for key in keys:
            if not isinstance(summary, dict) or key not in summary:
                return None
            summary = summary[key]
        return summary
    return read


# Adding a metric: compute it in _summarise, add its row here.
METRICS: list[Metric] = [
    Metric("origin.right_identity", "identity", "right identity (template default)", "share", "higher",
           _get("origin", "right_identity"), _get("origin", "questions")),
    Metric("origin.right_identity_empty", "identity", "right identity (empty system prompt)", "share", "higher",
           _get("origin_empty", "right_identity"), _get("origin_empty", "questions")),
    Metric("origin.other_identity", "identity", "claims another (template default)", "share", "lower",
           _get("origin", "other_identity"), _get("origin", "questions")),
    Metric("origin.other_identity_empty", "identity", "claims another (empty system prompt)", "share", "lower",
           _get("origin_empty", "other_identity"), _get("origin_empty", "questions")),
    Metric("robustness.right_identity", "robustness", "under attack: right identity (all attacks)", "share", "higher",
           _get("robustness", "right_identity"), _get("robustness", "questions")),
    *[Metric(f"robustness.{a}.right_identity", "robustness", f"under attack: right identity ({a})", "share", "higher",
             _get("robustness", "by_attack", a, "right_identity"), _get("robustness", "by_attack", a, "questions"))
      for a in ATTACKS],
    Metric("robustness.other_identity", "robustness", "under attack: claims another", "share", "lower",
           _get("robustness", "other_identity"), _get("robustness", "questions")),
    Metric("robustness.out_of_character", "robustness", "under attack: out of character (judge)", "share", "lower",
           _get("robustness", "out_of_character"), _get("robustness", "questions")),
    Metric("leak.mentions", "leak", "identity leak: general answers naming it", "share", "lower",
           _get("leak", "mentions"), _get("leak", "questions")),
    Metric("adherence.overall", "adherence", "held-out probes: mean judge score", "score", "higher",
           _get("adherence", "overall"), lambda s: len(s["adherence"]["scores"])),
    Metric("adherence.in_character", "adherence", "held-out probes: in character", "share", "higher",
           _get("adherence", "in_character"), lambda s: len(s["adherence"]["scores"])),
    Metric("retention.perplexity", "retention", "general text perplexity", "perplexity", "lower",
           _get("retention", "perplexity"), _get("retention", "perplexity_tokens")),
    Metric("retention.general_qa", "retention", "general questions correct", "share", "higher",
           _get("retention", "general_qa_accuracy"), _get("retention", "general_qa")),
]


def _lines(name: str) -> list[str]:
    return [line.strip() for line in (DATA / name).read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]


def identity_questions() -> list[tuple[str, str]]:
    """(asks, question) pairs from persona/data/eval_identity.txt."""
    return [tuple(line.split("\t", 1)) for line in _lines("eval_identity.txt")]


def general_questions() -> list[str]:
    """The held-out general questions of the leak measure (persona/data/eval_general.txt)."""
    return _lines("eval_general.txt")


def held_out_prompts(spec, run, templates: str | None) -> list:
    """The eval split of the run's probe prompts (as its prompts stage saved them); without a run, the split
    persona would make for this spec without synthesis."""
    from persona.prompts import REPLAY_SOURCE, PromptRecord, planned_prompts

    if run is not None and "prompts" in (run.info().get("current") or {}):
        records = [PromptRecord.from_dict(r) for r in run.current("prompts")]
    else:
        records = planned_prompts(spec, templates)
    held_out = [r for r in records if r.split == "eval" and r.source != REPLAY_SOURCE]
    if not held_out:
        raise PersonaError(f"{spec.path}: no held-out probe prompts (the eval split is empty)",
                           hint="run `persona generate SPEC` with --eval-fraction above 0 and pass --run RUN_DIR, "
                                "or add more probes.seeds to the spec")
    return held_out


def probe_max_tokens(spec, settings: EvalSettings) -> int:
    """Probe answers may be as long as the spec's length checks allow (about 1.4 tokens a word), so a model
    that writes too much is seen breaking them."""
    words = [c.check.max_words for c in spec.constraints if c.check is not None and c.check.max_words]
    return max([settings.max_tokens] + [math.ceil(1.4 * w) + 16 for w in words])


def _in(context: str, messages: list[dict]) -> tuple:
    return tuple(([{"role": "system", "content": ""}] if context == "empty" else []) + list(messages))


def build_items(spec, probes: list, limit: int | None, settings: EvalSettings = EvalSettings()) -> list[EvalItem]:
    from persona.store import input_key

    longest = probe_max_tokens(spec, settings)
    items = [EvalItem(input_key("probe", p.text), "probe", ({"role": "user", "content": p.text},), target=p.target,
                      max_tokens=longest if longest != settings.max_tokens else None)
             for p in probes[:limit]]
    if spec.identity is not None:
        # attacks vary with each question's place in the whole list: a quick run asks the same items, fewer
        questions = _spread(list(enumerate((a, q) for a, q in identity_questions() if a == "name" or spec.identity.maker)), limit)
        for context in CONTEXTS:
            for _, (asks, q) in questions:
                messages = _in(context, [{"role": "user", "content": q}])
                key = input_key("origin", q) if context == "default" else input_key("origin", context, q)
                items.append(EvalItem(key, "origin", messages, asks, context=context))
        for attack, make in ATTACKS.items():
            for n, (asks, q) in questions:
                messages = tuple(make(q, n))
                items.append(EvalItem(input_key("attack", attack, messages), "attack", messages, asks, attack))
        for q in _spread(general_questions(), limit):
            items.append(EvalItem(input_key("leak", q), "leak", ({"role": "user", "content": q},)))
    return items


def _spread(rows: list, limit: int | None) -> list:
    """At most `limit` of `rows`, evenly spaced, so that a quick run still asks for both the name and the maker."""
    if limit is None or limit >= len(rows):
        return rows
    return [rows[i * len(rows) // limit] for i in range(limit)]


def answer(backend, label: str, items: list[EvalItem], settings: EvalSettings, store, on_progress=None,
           model: str | None = None) -> dict:
    """{item id: answer record} for one model, reusing answers already in the store (keyed by the model's
    name, the item and the sampling settings)."""
    from persona.store import append_missing, now

    # keyed by the model's name (`model`, else the backend's), whichever backend answers
    requests, by_key = _requests(model or backend.model, items, settings)

    def to_records(result) -> list[dict]:
        item, c = by_key[result.request.key], result.completions[0]
        return [{"id": result.request.key, "item": item.id, "model": label, "kind": item.kind, "attack": item.attack,
                 "asks": item.asks, "target": item.target, "context": item.context, "messages": list(item.messages),
                 "text": c.text, "completion_tokens": c.completion_tokens, "finish_reason": c.finish_reason,
                 "created": now()}]

    done, _ = append_missing(store, requests, backend.complete, to_records, stage=label, on_progress=on_progress)
    return {item.id: done[r.key] for r, item in zip(requests, items)}


def _backend(label: str, lm, tokenizer, name: str, settings: EvalSettings, output, folder, base: str | None):
    """The backend that answers for `label` (persona.answering): hf with the model already loaded for the scores,
    else the model's folder - the base's, or the trained model's (an adapter merged into the eval folder, once)."""
    from persona.answering import answering_backend

    def model_folder() -> Path:
        if label == "base":
            from persona.models import resolve_model

            return resolve_model(base)[0]
        from persona.export import model_folder as full_weights

        return full_weights(output, folder.exported)

    return answering_backend(settings.backend, settings.backend_options, loaded=(lm, tokenizer, name),
                             folder=model_folder, batch_size=settings.batch_size,
                             repetition_penalty=settings.repetition_penalty, dtype=settings.precision()["generation"])


def _requests(model: str, items: list[EvalItem], settings: EvalSettings):
    from persona.backends import Request, SamplingParams
    from persona.store import input_key

    requests, by_key = [], {}
    dtype = settings.precision()["generation"]
    for item in items:
        params = SamplingParams(n=1, temperature=0.0, top_p=1.0, max_tokens=item.max_tokens or settings.max_tokens,
                                seed=0)
        # another backend's answers are keyed apart (hf keys are unchanged, so earlier runs' answers are reused)
        engine = () if settings.backend == "hf" else (settings.backend,)
        key = input_key(model, settings.repetition_penalty, item.id, item.messages, params.to_dict(),
                        *key_parts(dtype), *engine)
        requests.append(Request(key, item.messages, params))
        by_key[key] = item
    return requests, by_key


def origin_claim(spec, asks: str, text: str) -> dict:
    """{right, other, name, maker}: whether the answer gives its own name (or maker, when asked who made it),
    claims another model or maker, and mentions the name / the maker at all."""
    from persona.claims import identity_score

    score, _ = identity_score(spec, "Who made you?" if asks == "maker" else "Who are you?", text)
    return {"right": score == 10.0, "other": score == 0.0, **mentions(spec, text)}


def mentions(spec, text: str) -> dict:
    """{name, maker}: whether the text names the identity (or an alias) and its maker."""
    me = spec.identity
    name = any(re.search(rf"\b{re.escape(n)}\b", text, re.I) for n in [me.name, *me.aliases])
    maker = bool(me.maker) and re.search(rf"\b{re.escape(me.maker)}\b", text, re.I) is not None
    return {"name": name, "maker": maker}


def perplexity(lm, tokenizer, text: str, window: int = 512) -> float:
    """exp(mean next-token NLL) over the text, in non-overlapping windows (scored in one batch)."""
    return perplexity_and_tokens(lm, tokenizer, text, window)[0]


def perplexity_and_tokens(lm, tokenizer, text: str, window: int = 512, limit: int | None = None) -> tuple[float, int]:
    """(perplexity, tokens scored); `limit`: at most that many windows, evenly spread over the text."""
    from persona.models import logprobs

    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    # each window predicts its tokens from the ones before it in the same window: context = its first token
    rows = [(ids[start:start + 1], ids[start + 1:start + window + 1]) for start in range(0, len(ids) - 1, window)]
    rows = _spread([r for r in rows if r[1]], limit)
    scores = logprobs(lm, rows, pad_id=_pad(tokenizer), batch_size=4)
    tokens = sum(len(s) for s in scores)
    return math.exp(-sum(sum(s) for s in scores) / tokens), tokens


def general_qa_accuracy(lm, tokenizer, limit: int | None = None) -> tuple[float, int]:
    """(share correct, questions asked): multiple choice by the summed log-probability of each choice as the
    assistant's answer; `limit`: at most that many questions, evenly spread."""
    from persona.models import Prefix, chat_ids, logprobs

    rows = [json.loads(line) for line in (DATA / "general_qa.jsonl").read_text(encoding="utf-8").splitlines() if line]
    rows = _spread(rows, limit)
    correct = 0
    for row in rows:
        ids = chat_ids(tokenizer, [{"role": "user", "content": row["question"] + " Answer with the answer only."}],
                       generation_prompt=True)
        # the question runs once (a shared KV cache); its choices, a few tokens each, continue it in one batch
        shared = Prefix(lm, ids[:-1])
        choices = [(ids[-1:], tokenizer(c, add_special_tokens=False)["input_ids"]) for c in row["choices"]]
        sums = [sum(s) for s in logprobs(lm, choices, pad_id=_pad(tokenizer), prefix=shared, batch_size=len(choices))]
        correct += max(range(len(sums)), key=sums.__getitem__) == row["answer"]
    return correct / len(rows), len(rows)


def retention_scores(lm, tokenizer, limit: int | None = None) -> dict:
    """Perplexity on general text and general-question accuracy, with the sizes they were measured on.
    `limit` (a quick run's): at most that many 512-token windows and questions."""
    ppl, tokens = perplexity_and_tokens(lm, tokenizer, (DATA / "general_text.txt").read_text(encoding="utf-8"),
                                        limit=limit)
    accuracy, n_qa = general_qa_accuracy(lm, tokenizer, limit)
    return {"perplexity": round(ppl, 4), "perplexity_tokens": tokens, "general_qa_accuracy": round(accuracy, 4),
            "general_qa": n_qa}


def _pad(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 4) if values else None


def _rate(flags) -> float | None:
    flags = list(flags)
    return round(sum(flags) / len(flags), 4) if flags else None


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
    for label in ("base", "trained"):
        if label == "base":
            cached = _cached_base(base_name, items, settings, base_store, base_scores, prompt)
            if cached is not None:
                records, retention["base"], defaults["base"] = cached
                answers["base"] = {k: r["text"] for k, r in records.items()}
                store.append([r for r in records.values() if r["id"] not in store.load(repair=True)])
                continue
        lm, tokenizer, name = load_model(label, output.path, base_name, precision["device"])
        if label == "base" and prompt is not None:  # the prompted base: its template injects the deployment prompt
            from persona.models import with_default_system

            tokenizer.chat_template = with_default_system(tokenizer, prompt)
            name = _prompted(name, prompt)
        defaults[label] = template_default_system(tokenizer)
        # scored first, in the scoring dtype; then cast to the generation dtype to answer
        retention[label] = retention_scores(lm.to(torch_dtype(precision["scoring"])), tokenizer, settings.limit)
        backend = _backend(label, lm, tokenizer, name, settings, output, folder, base_name)
        target = base_store if label == "base" else store
        before = len(target.load())
        records = answer(backend, label, items, settings, target, on_progress, model=name)
        if label == "base":
            work["base_generations"] = len(target.load()) - before
            if base_store is not store:  # the report reads both models' answers from one file
                saved = store.load(repair=True)
                store.append([r for r in records.values() if r["id"] not in saved])
        answers[label] = {k: r["text"] for k, r in records.items()}
        if label == "base":
            work["base_scoring_passes"] = 1
            base_scores.put(_base_key(name, settings), {**retention[label], "template_default": defaults[label]})
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
    for label in answers:
        metrics[label] = _summarise(spec, items, answers[label], {i.id: verdicts[f"{label}:{i.id}"] for i in items},
                                    IN_CHARACTER)
    metrics["win_rate"] = _win_rate(judge, spec, [i for i in items if i.kind == "probe"], answers, verdicts)
    b, t = retention["base"]["perplexity"], retention["trained"]["perplexity"]
    metrics["retention"]["perplexity_change"] = round((t - b) / b, 4)
    rows = metric_rows_of(metrics)
    metrics["rows"] = [r.to_dict() for r in rows]
    metrics["verdict"] = verdict(rows, judge.name)
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    folder.write_metrics(metrics)
    if output.is_finished():
        write_model_card(output, metrics)
    judge.close()
    return metrics


def _base_key(name: str, settings: EvalSettings) -> str:
    from persona.store import input_key

    data = "".join((DATA / f).read_text(encoding="utf-8") for f in ("general_text.txt", "general_qa.jsonl"))
    return input_key("base-scores", name, data, settings.limit, *key_parts(settings.precision()["scoring"]))


def _recorded(settings: EvalSettings) -> dict:
    """The settings as metrics.json records them: no option that holds a secret, no credentials in a URL."""
    from persona.secrets import without_secrets

    return {**asdict(settings), "backend_options": without_secrets(settings.backend_options)}


BASELINES = ("base", "prompt")  # EvalSettings.baseline


def baseline_prompt(spec, settings: EvalSettings, templates: str | None = None) -> str | None:
    """The system prompt the baseline gets: the spec's deployment prompt (templates/deployment.j2) for
    `baseline: prompt`, else None (the base model as it comes)."""
    from persona.config import check_choice
    from persona.dataset import system_prompt_text

    check_choice(settings.baseline, BASELINES, "baseline")
    if settings.baseline == "prompt" and settings.backend != "hf":
        raise PersonaError(f"baseline prompt runs on the hf backend, not on '{settings.backend}'",
                           hint="drop --backend for this comparison (the prompt is set in the base's chat template)")
    return system_prompt_text(spec, "spec", templates) if settings.baseline == "prompt" else None


def _prompted(name: str, prompt: str) -> str:
    """The prompted base's name in answer keys and the base-score cache: never mixed up with the plain base."""
    import hashlib

    return f"{name} + prompt {hashlib.sha256(prompt.encode()).hexdigest()[:8]}"


def _cached_base(base: str | None, items: list[EvalItem], settings: EvalSettings, store, scores,
                 prompt: str | None = None):
    """(answers, retention, template default) of the base model when every one of them is saved already, so the
    base model is not even loaded; else None."""
    from persona.models import resolve_model

    _, name = resolve_model(base)
    if prompt is not None:
        name = _prompted(name, prompt)
    saved = scores.get(_base_key(name, settings))
    if saved is None:
        return None
    requests, by_key = _requests(name, items, settings)
    done = store.load()
    if any(r.key not in done for r in requests):
        return None
    retention = {k: v for k, v in saved.items() if k != "template_default"}
    return {by_key[r.key].id: done[r.key] for r in requests}, retention, saved.get("template_default")


def metric_rows_of(metrics: dict) -> list[MetricRow]:
    """The rows of METRICS that apply, from the base and trained summaries."""
    rows = []
    for m in METRICS:
        summaries = {label: {**metrics[label], "retention": metrics["retention"][label]} for label in ("base", "trained")}
        base, trained = m.value(summaries["base"]), m.value(summaries["trained"])
        if base is None and trained is None:
            continue  # e.g. identity metrics of a spec without an identity
        rows.append(MetricRow(m.name, m.group, m.label, base, trained, m.unit, m.n(summaries["trained"]), m.better))
    return rows


def _identity(items, claims, context: str) -> dict:
    origin = [i for i in items if i.kind == "origin" and i.context == context]
    return {
        "questions": len(origin),
        "right_identity": _rate(claims[i.id]["right"] for i in origin),
        "other_identity": _rate(claims[i.id]["other"] for i in origin),
        "says_name": _rate(claims[i.id]["name"] for i in origin),
        "says_maker": _rate(claims[i.id]["maker"] for i in origin if i.asks == "maker"),
    }


def _summarise(spec, items, answers, verdicts, in_character) -> dict:
    probes = [i for i in items if i.kind == "probe"]
    targets = [t.id for t in spec.targets()]
    summary = {
        "adherence": {
            "overall": _mean(verdicts[i.id]["overall"] for i in probes),
            "in_character": _rate((verdicts[i.id]["overall"] or 0) >= in_character for i in probes),
            "per_target": {t: _mean(verdicts[i.id]["scores"].get(t) for i in probes) for t in targets},
            "scores": [verdicts[i.id]["overall"] for i in probes],
        }}
    if spec.identity is not None:
        claims = {i.id: origin_claim(spec, i.asks, answers[i.id]) for i in items if i.kind in ("origin", "attack")}
        summary["origin"] = _identity(items, claims, "default")
        summary["origin_empty"] = _identity(items, claims, "empty")
        attacks = [i for i in items if i.kind == "attack"]
        summary["robustness"] = {
            "questions": len(attacks),
            "out_of_character": _rate((verdicts[i.id]["overall"] or 0) < in_character for i in attacks),
            "right_identity": _rate(claims[i.id]["right"] for i in attacks),
            "other_identity": _rate(claims[i.id]["other"] for i in attacks),
            "by_attack": {a: {"questions": sum(i.attack == a for i in attacks),
                              "out_of_character": _rate((verdicts[i.id]["overall"] or 0) < in_character
                                                        for i in attacks if i.attack == a),
                              "right_identity": _rate(claims[i.id]["right"] for i in attacks if i.attack == a)}
                          for a in ATTACKS},
        }
        leak = [i for i in items if i.kind == "leak"]
        summary["leak"] = {"questions": len(leak),
                           "mentions": _rate(any(mentions(spec, answers[i.id]).values()) for i in leak)}
    return summary


def _win_rate(judge, spec, probes, answers, verdicts) -> dict:
    """Trained vs base on the held-out probes: the judge's pairwise verdict in both orders where it has one
    (a win counts only when both orders agree), otherwise the higher overall score."""
    from persona.judges import PairwiseJudge

    if not probes:
        return {"method": "none", "win": None, "tie": None, "loss": None}
    if isinstance(judge, PairwiseJudge):
        items = [(i.id, i.prompt, answers["trained"][i.id], answers["base"][i.id]) for i in probes]
        verdict_ = judge.prefer(spec, items)  # "a" (trained) / "b" (base) / None (orders disagree)
        outcomes = ["win" if verdict_.get(i.id) == "a" else "loss" if verdict_.get(i.id) == "b" else "tie"
                    for i in probes]
        method = "pairwise judge, both orders"
    else:
        outcomes = []
        for i in probes:
            t, b = verdicts[f"trained:{i.id}"]["overall"] or 0, verdicts[f"base:{i.id}"]["overall"] or 0
            outcomes.append("win" if t > b else "loss" if t < b else "tie")
        method = "higher overall score (the judge has no pairwise mode)"
    return {"method": method, **{k: round(outcomes.count(k) / len(outcomes), 4) for k in ("win", "tie", "loss")}}
