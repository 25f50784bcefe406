"""`persona stats RUN_DIR`: counts, acceptance, score distributions and tokens of a run folder, read from its
files alone (nothing is loaded, run or changed).

    numbers = run_stats(Path("runs/brand"))
    numbers["responses"]["conforming"], numbers["judgements"], numbers["build"]["acceptance_rate"]
"""

from __future__ import annotations

from pathlib import Path

from persona.run import RunFolder


def run_stats(run_dir: Path) -> dict:
    """Counts, acceptance, score distributions and tokens of a run folder, from its files alone."""
    run = RunFolder(run_dir)
    if not run.path.exists():
        from persona.errors import PersonaError

        raise PersonaError(f"run folder '{run_dir}' not found", hint="pass the folder `persona generate` wrote, e.g. runs/brand")
    info = run.info()
    saved_prompts = run.store("prompts").load()
    saved_responses = run.store("responses").load()
    prompts, responses = _current(info, "prompts", saved_prompts), _current(info, "responses", saved_responses)
    synthesis = run.store("synthesis").load()
    judgements = run.store("judgements").load()
    by_judge: dict[str, dict] = {}
    for j in judgements.values():
        if j.get("response_id") not in responses and responses is not saved_responses:
            continue  # .get: a hand-edited record lacks fields, and a reader must not crash on it
        counts = by_judge.setdefault(str(j.get("judge")), {"ok": 0, "unjudged": 0})
        counts[str(j.get("status"))] = counts.get(str(j.get("status")), 0) + 1
    generated = list(responses.values()) + list(synthesis.values())
    tokens = {"prompt": sum(_number(r.get("prompt_tokens")) for r in generated),
              "completion": sum(_number(r.get("completion_tokens")) for r in generated)}
    return {
        "identity": info.get("identity"), "run_dir": str(run_dir),
        "prompts": {s: sum(p.get("split") == s for p in prompts.values()) for s in ("train", "eval")},
        "responses": {k: sum(r.get("kind") == k for r in responses.values())
                      for k in ("conforming", "violating", "demonstration", "replay")},
        "judgements": by_judge, "tokens": tokens, "build": run.build(),
        # records of earlier generations (other settings, a changed spec) kept in the stores but not used now
        "superseded": {"prompts": len(saved_prompts) - len(prompts), "responses": len(saved_responses) - len(responses)},
    }


def _current(info: dict, stage: str, saved: dict) -> dict:
    """The records of `stage` the run uses now (run.json's current ids); all saved ones if it never finished."""
    ids = ((info.get("current") or {}).get(stage) or {}).get("ids")
    if not isinstance(ids, list):
        return saved
    return {i: saved[i] for i in ids if isinstance(i, str) and i in saved}


def _number(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
