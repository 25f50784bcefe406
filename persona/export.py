"""`persona export`: a trained output as one plain model folder - merged weights, tokenizer and the chat template
training saved - that vLLM, `transformers serve` or `AutoModelForCausalLM.from_pretrained` load with nothing
of persona's.

    export_model("runs/brand/train-sft", "models/brand")   -> Path("models/brand")
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from persona.errors import PersonaError


def export_model(path: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write `path`'s model (its LoRA adapter merged into the base, or its full weights) with its tokenizer and
    model card into `out`. Written beside `out` first and moved into place, so an interrupted export leaves no
    half-written model; an existing, non-empty `out` is refused unless `overwrite`."""
    from persona.models import load_trained
    from persona.run import TrainOutput

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise PersonaError(f"{out} already exists", hint="pick another folder, or pass --overwrite")
    if out.resolve() == Path(path).resolve():
        raise PersonaError(f"{out} is the trained output itself", hint="export into another folder")
    lm, tokenizer = load_trained(path)  # check_trained inside: a folder that holds no model is named
    if hasattr(lm, "merge_and_unload"):
        lm = lm.merge_and_unload()
    staging = out.with_name(out.name + ".exporting")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    lm.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    card = TrainOutput(path).card
    if card.is_file():
        shutil.copyfile(card, staging / card.name)
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    return out


def model_folder(output, merged: Path) -> Path:
    """A folder of full weights for a backend that loads one (vLLM, a server that loads folders): the output
    itself when it holds a full model, else its adapter merged into `merged` - written once, and again only
    when the trained model changed (its fingerprint is kept in `merged`/persona_export.json)."""
    import json

    from persona.models import trained_fingerprint
    from persona.run import read_json
    from persona.store import write_atomic

    if output.has_model():
        return Path(output.path)
    mark = Path(merged) / "persona_export.json"
    fingerprint = trained_fingerprint(output.path)
    if not mark.is_file() or read_json(mark).get("fingerprint") != fingerprint:
        export_model(output.path, merged, overwrite=True)
        write_atomic(mark, json.dumps({"fingerprint": fingerprint}) + "\n")
    return Path(merged)
