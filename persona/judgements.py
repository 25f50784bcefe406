"""Judgements: every response scored by a judge against the spec. Stage 3 of `persona generate`.

    records, made = judge_responses(spec, responses, load_judge("offline"), RunFolder("runs/brand"))
    {"id": "...", "response_id": "9e1f...-0", "judge": "offline:SmolLM2-135M-Instruct", "status": "ok",
     "overall": 7.2, "scores": {"identity": 10.0, "warm": null, ...}, "rationale": "...", "raw": "..."}

Cached in the run's judgements store by (response, judge fingerprint, spec hash): a different --judge
re-runs only this stage and the dataset build; the same judge again makes no calls. Unjudged records (a
judge reply that could not be read) are kept with their raw reply and counted, never dropped silently.
The judges themselves (rules, offline, llm, reward) live in persona.judges.

Every judgement also carries the universal checks (persona.assertions): `universal` names the problems found
(over_identification, name_only, looping, empty_or_cut) and the overall score is capped for them
(assertions.UNIVERSAL_CAPS), whatever the judge: a name-only or looping answer is never in character. They are
applied when judgements are read, not stored, so a change to the checks needs no judge to run again.
"""

from __future__ import annotations

from typing import Callable

from persona.assertions import capped, universal_problems
from persona.judges import Judge, JudgeItem
from persona.responses import ResponseRecord
from persona.run import RunFolder
from persona.spec import Spec
from persona.store import append_missing, input_key, now


def judgement_key(response_id: str, judge: Judge, spec: Spec) -> str:
    return input_key("judgement", response_id, judge.fingerprint, spec.spec_hash)


def judge_responses(spec: Spec, responses: list[ResponseRecord], judge: Judge, run: RunFolder,
                    on_progress: Callable | None = None) -> tuple[dict[str, dict], int]:
    """{response id: judgement record} for every response, judging only what is missing."""
    keys = {r.id: judgement_key(r.id, judge, spec) for r in responses}
    items = [JudgeItem(r.id, r.prompt, r.text) for r in responses]

    def to_records(result) -> list[dict]:
        item, verdict = result
        return [{"id": keys[item.key], "response_id": item.key, "judge": judge.name, **verdict.to_dict(),
                 "created": now()}]

    done, made = append_missing(run.store("judgements"), items, lambda pending: judge.judge(spec, pending), to_records,
                                is_done=lambda item, done: keys[item.key] in done, stage="judging",
                                on_progress=on_progress)
    by_id = {r.id: r for r in responses}
    return {rid: with_universal(spec, by_id[rid], done[key]) for rid, key in keys.items()}, made


def with_universal(spec: Spec, response: ResponseRecord, record: dict) -> dict:
    """The judgement `record` of `response` with the universal checks: `universal` lists the problems found and
    the overall score is capped for them (a copy; the store keeps the judge's own verdict)."""
    found = universal_problems(spec, response.prompt, response.text, response.finish_reason, response.context)
    overall = capped(record.get("overall"), found)
    out = {**record, "universal": found}
    if overall != record.get("overall"):
        out["overall"] = overall
        out["rationale"] = (f"universal checks: {', '.join(found)} (overall capped at {overall:g}); "
                            + (record.get("rationale") or ""))
    return out


def saved_judgements(spec: Spec, responses: list[ResponseRecord], judge: Judge, run: RunFolder) -> dict[str, dict]:
    """{response id: judgement record} for the responses this judge has already judged (nothing is run)."""
    saved = run.store("judgements").load()
    return {r.id: with_universal(spec, r, saved[k]) for r in responses
            if (k := judgement_key(r.id, judge, spec)) in saved}
