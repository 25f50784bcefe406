"""Each model's answers to the eval's items, through persona.answering's backends, kept in an answer store and
reused by model, item and sampling settings (an interrupted eval resumes)."""

from __future__ import annotations

from pathlib import Path

from persona.eval.questions import EvalItem
from persona.eval.settings import EvalSettings
from persona.precision import key_parts


def answer(backend, label: str, items: list[EvalItem], settings: EvalSettings, store, on_progress=None,
           model: str | None = None) -> dict:
    """{item id: answer record} for one model, reusing answers already in the store (keyed by the model's
    name, the item and the sampling settings)."""
    from persona.store import append_missing, now

    # keyed by the model's name (`model`, else the backend's), whichever backend answers
    requests, by_key = requests_for(model or backend.model, items, settings)

    def to_records(result) -> list[dict]:
        item, c = by_key[result.request.key], result.completions[0]
        return [{"id": result.request.key, "item": item.id, "model": label, "kind": item.kind, "attack": item.attack,
                 "asks": item.asks, "target": item.target, "context": item.context, "messages": list(item.messages),
                 "text": c.text, "completion_tokens": c.completion_tokens, "finish_reason": c.finish_reason,
                 "created": now()}]

    done, _ = append_missing(store, requests, backend.complete, to_records, stage=label, on_progress=on_progress)
    return {item.id: done[r.key] for r, item in zip(requests, items)}


def answering_for(label: str, lm, tokenizer, name: str, settings: EvalSettings, output, folder, base: str | None):
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


def requests_for(model: str, items: list[EvalItem], settings: EvalSettings):
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
