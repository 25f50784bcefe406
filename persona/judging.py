"""Judgements: every response scored by a judge against the spec. Stage 3 of `persona generate`.

    records, made = judge_responses(spec, responses, load_judge("offline"), Path("runs/brand"))
    {"id": "...", "response_id": "9e1f...-0", "judge": "offline:SmolLM2-135M-Instruct", "status": "ok",
     "overall": 7.2, "scores": {"identity": 10.0, "warm": null, ...}, "rationale": "...", "raw": "..."}

Cached in judgements.jsonl by (response, judge fingerprint, spec hash): a different --judge re-runs only
this stage and the dataset build; the same judge again makes no calls. Unjudged records (a judge
reply that could not be read) are kept with their raw reply and counted, never dropped silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from persona.judges import Judge, JudgeItem
from persona.responses import ResponseRecord
from persona.spec import Spec
from persona.store import JsonlStore, input_key, now


def judgement_key(response_id: str, judge: Judge, spec: Spec) -> str:
    return input_key("judgement", response_id, judge.fingerprint, spec.spec_hash)


def judge_responses(spec: Spec, responses: list[ResponseRecord], judge: Judge, run_dir: Path,
                    on_progress: Callable | None = None) -> tuple[dict[str, dict], int]:
    """{response id: judgement record} for every response, judging only what is missing."""
    store = JsonlStore(run_dir / "judgements.jsonl")
    done = store.load()
    keys = {r.id: judgement_key(r.id, judge, spec) for r in responses}
    pending = [JudgeItem(r.id, r.prompt, r.text) for r in responses if keys[r.id] not in done]
    if pending and on_progress:
        on_progress("judging", 0, len(pending), 0)
    for count, (item, verdict) in enumerate(judge.judge(spec, pending), 1):
        record = {"id": keys[item.key], "response_id": item.key, "judge": judge.name, **verdict.to_dict(),
                  "created": now()}
        store.append([record])
        done[record["id"]] = record
        if on_progress:
            on_progress("judging", count, len(pending), 0)
    return {rid: done[key] for rid, key in keys.items()}, len(pending)
