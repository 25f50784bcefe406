"""Answering as one model - a base model or one persona trained - through any backend of persona.backends: the
one home for eval's answers and refine's samples.

    lm, tokenizer, name = load_model("trained", "runs/brand/train-sft")          # merged, in eval mode
    backend = answering_backend("hf", {}, loaded=(lm, tokenizer, name), batch_size=16)
    backend = answering_backend("vllm", {"max_model_len": 2048}, folder=lambda: model_folder(output, merged))
    backend = answering_backend("openai", {"base_url": "http://localhost:8000/v1"}, folder=...)

hf answers with the model in memory (eval has it loaded already for its scores); every other backend, and hf
replicated on Ray, loads the model's folder of full weights - an adapter is merged into one once, and only when
a backend needs it - unless the options name a served copy (`model=NAME` on a server). An option the chosen
backend does not take is an error that names it, whichever command passed it.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable

from persona.errors import PersonaError


def load_model(which: str, path: str | Path | None, base: str | None = None, device: str = "cpu"):
    """(fp32 model on `device` in eval mode, tokenizer, name) of the base model ("base": `base`, else the embedded
    one) or the trained output at `path` ("trained": an adapter merged into its base; `base` if the base moved)."""
    from persona.models import load_base, load_trained

    if which == "base":
        lm, tokenizer, name = load_base(base)
        return lm.to(device).eval(), tokenizer, name
    lm, tokenizer = load_trained(path, "causal", base)
    if hasattr(lm, "merge_and_unload"):
        lm = lm.merge_and_unload()  # plain weights generate faster than an adapter
    return lm.to(device).eval(), tokenizer, str(path)


def check_options(backend: str, options: dict, ray: str | None = None) -> list[str]:
    """The options `backend` takes when it answers as one model (hf here: those of a model already in memory), after
    checking its name and that `options` holds no other: a PersonaError names the first one it does not take.
    Eval and refine call it before any model loads."""
    from persona.backends import BACKENDS, options_of
    from persona.registry import check_name

    check_name(BACKENDS, backend, "backend", hidden=("fake",))
    if backend == "hf" and not ray:
        from persona.backends.hf import HFBackend

        taken = [p for p in inspect.signature(HFBackend.from_loaded).parameters
                 if p not in ("cls", "lm", "tokenizer", "name")]
    else:
        taken = options_of(backend)
    unknown = [k for k in options if k not in taken]
    if unknown:
        raise PersonaError(f"backend '{backend}' has no option '{unknown[0]}'", hint=f"its options: {', '.join(taken)}")
    return taken


def answering_backend(backend: str, options: dict | None = None, loaded=None, folder: Callable[[], Path] | None = None,
                      batch_size: int | None = None, ray: str | None = None, ray_replicas: int | None = None,
                      repetition_penalty: float | None = None, dtype: str | None = None):
    """The backend that answers as one model. `options` are the user's (-o KEY=VALUE); `batch_size` persona's own
    setting, used where the backend takes one. hf, here: the model in memory - `loaded` is (lm, tokenizer, name)
    or a function that loads it - with `repetition_penalty` and `dtype` where given. Any other backend (or hf on
    Ray): `folder()` gives the model's folder of full weights, called only when the options name no model."""
    from persona.backends import place_backend

    options = dict(options or {})
    taken = check_options(backend, options, ray)
    if backend == "hf" and not ray:
        from persona.backends.hf import HFBackend

        lm, tokenizer, name = loaded() if callable(loaded) else loaded
        chosen = {"batch_size": batch_size, "repetition_penalty": repetition_penalty, "dtype": dtype}
        return HFBackend.from_loaded(lm, tokenizer, name, **{**{k: v for k, v in chosen.items() if v is not None},
                                                            **options})
    if batch_size and "batch_size" in taken:
        options.setdefault("batch_size", batch_size)
    if "model" not in options:  # a served copy is named by -o model=NAME; else the folder is the model
        options["model"] = str(folder())
    return place_backend(backend, options, ray, ray_replicas)
