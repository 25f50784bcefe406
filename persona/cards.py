"""The model card of a trained output (README.md beside the weights): what was trained on what, with which
settings and precision, and after `persona eval` the base -> trained numbers. Its YAML front matter is what
the Hugging Face Hub reads.
"""

from __future__ import annotations

import json

from persona.methods import METHODS
from persona.run import TrainOutput


def write_model_card(output: TrainOutput, evaluation: dict | None = None) -> None:
    """(Re)write the model card from what the folder holds (settings, logs, reward numbers) and, after
    `persona eval`, the eval's metrics."""
    from persona.store import write_atomic

    write_atomic(output.card, model_card(output, evaluation))


RECORD_FIELDS = ("method", "model", "base_model", "dataset", "run", "data", "start", "system_prompt",
                 "base_template_default", "base_model_id", "license")  # what persona_train.yaml records besides the settings


def _template_note(settings: dict) -> str:
    system, base = settings.get("system_prompt"), settings.get("base_template_default")
    was = f" (the base's injected {base!r})" if base else ""
    if system is None:
        return "the base's, unchanged" + was
    return f"a conversation without a system message gets persona's default system prompt {system!r}{was}"


def _precision_note(settings: dict) -> str:
    dtype = settings.get("dtype") or ("bfloat16" if settings.get("bf16") else "float16" if settings.get("fp16")
                                      else "float32")
    where = "cpu" if settings.get("use_cpu") else "gpu"
    if dtype == "float32":
        return f"float32 ({where})"
    return f"{dtype} autocast, weights and optimizer state float32 ({where})"


def _card_metadata(settings: dict) -> str:
    """The card's YAML front matter, as the Hugging Face Hub and `huggingface_hub.ModelCard.load` read it."""
    import yaml

    method = settings.get("method", "?")
    lora = settings.get("use_lora", True)
    meta = {**({"base_model": settings["base_model_id"]} if settings.get("base_model_id") else {}),
            "library_name": "peft" if lora else "transformers",
            **({"license": settings["license"]} if settings.get("license") else {}),
            "pipeline_tag": "text-generation",
            "tags": ["persona", "trl", method, *(["lora"] if lora else [])],
            **({"datasets": [settings["dataset"]]} if settings.get("dataset") else {})}
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---"


def model_card(output: TrainOutput, evaluation: dict | None = None) -> str:
    from persona.metrics import format_value, metric_rows, pct

    settings = output.settings()
    method = settings.get("method", "?")
    data = settings.get("data") or {}
    logs = output.metrics() if output.metrics_file.is_file() else []
    losses = [m["loss"] for m in logs if "loss" in m]
    runtime = next((m["train_runtime"] for m in reversed(logs) if "train_runtime" in m), None)
    trl = {k: v for k, v in settings.items() if k not in RECORD_FIELDS}
    spec = METHODS.get(method)
    tokens = max((m.get("num_input_tokens_seen") or 0 for m in logs), default=0)
    speed = f", {tokens} tokens ({tokens / runtime:.0f} tokens/s)" if tokens and runtime else ""
    lines = [_card_metadata(settings), f"# {method.upper()} fine-tune of {settings.get('model', '?')}", "",
             f"Trained by persona on `{settings.get('dataset', '?')}` "
             f"({'LoRA adapter' if trl.get('use_lora', True) else 'full model'}).", "",
             f"- method: {method} (TRL {spec.trainer if spec else '?'})",
             f"- dataset spec hash: {data.get('spec_hash') or 'n/a'}; judge: {data.get('judge') or 'n/a'}; "
             f"training rows: {data.get('train_rows', 'n/a')}",
             f"- steps logged: {len(losses)}; first loss {losses[0] if losses else 'n/a'}, "
             f"last loss {losses[-1] if losses else 'n/a'}",
             f"- training time: {'n/a' if runtime is None else f'{runtime:.1f} s'}{speed}",
             f"- precision: {_precision_note(settings)}",
             *([f"- started from: `{settings['start']}` (its weights are the model trained here and its reference)"]
               if settings.get("start") else []),
             f"- chat template: {_template_note(settings)}", "",
             "Settings (persona_train.yaml):", "", "```yaml"]
    lines += [f"{k}: {json.dumps(v)}" for k, v in trl.items()]
    lines += ["```", ""]
    reward = output.reward()
    if reward:
        lines += [f"Reward model: pairwise accuracy {pct(reward['eval_pairwise_accuracy'])} on {reward['eval_pairs']} "
                  f"held-out pairs ({pct(reward['train_pairwise_accuracy'])} on {reward['train_pairs']} training "
                  f"pairs); use it as a judge with `--judge reward:{output.path}`.", ""]
        from persona.display import reward_targets

        if reward.get("targets"):
            lines += ["```", *reward_targets(reward["targets"]), "```", ""]
    if not evaluation:
        lines += ["Evaluation numbers appear here once `persona eval` has run.", ""]
        return "\n".join(lines)
    lines += ["## Evaluation (persona eval, base -> trained)", ""]
    for row in metric_rows(evaluation):
        size = f" (n={row.n})" if row.n else ""
        prompted = f" (base + prompt {format_value(row.prompted, row.unit)})" if row.prompted is not None else ""
        lines.append(f"- {row.label}{size}: {format_value(row.base, row.unit)} -> {format_value(row.trained, row.unit)}"
                     + prompted)
    lines.append(f"- judge: {evaluation.get('judge')}")
    return "\n".join(lines) + "\n"
