"""The training methods (persona.train's table) and their settings: each method is TRL's own trainer and
config; settings are one flat mapping of TRL / PEFT field names, persona's defaults < the method's < a YAML
file (--config) < command-line overrides.

    METHODS["dpo"].trainer             -> "DPOTrainer"
    resolve_settings("ipo", None, {"beta": 0.5}, card={})   -> {..., "loss_type": ["ipo"], "beta": 0.5}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persona.errors import PersonaError
from persona.run import TrainOutput


@dataclass(frozen=True)
class Method:
    """One training method: which TRL trainer and config run it, which of persona's datasets it reads
    ("dpo": prompt/chosen/rejected pairs, "kto": prompt/completion/label rows), its default settings, and
    what it trains ("causal": the chat model itself, "reward": a one-score classifier)."""

    trainer: str  # a class in trl ("DPOTrainer"; "experimental.orpo.ORPOTrainer" for an experimental one)
    config: str  # its config class
    dataset: str  # the run's datasets/<dataset> folder, and the columns it needs (COLUMNS)
    defaults: dict = field(default_factory=dict)
    model: str = "causal"
    reference: bool = True  # trains against a reference model (log-probs can be precomputed and cached)
    options: tuple[str, ...] = ()  # persona's own settings this method takes, beyond LoRA's
    about: str = ""
    unset: tuple[str, ...] = ()  # persona's defaults (DEFAULTS) that its TRL config does not take


METHODS: dict[str, Method] = {
    "sft": Method("SFTTrainer", "SFTConfig", "sft", {"learning_rate": 2e-4, "num_train_epochs": 3,
                                                     "per_device_train_batch_size": 8, "max_length": 384,
                                                     # batches of like lengths: short identity rows are not
                                                     # padded to the length of replay answers
                                                     "train_sampling_strategy": "group_by_length"},
                  reference=False, about="demonstrations and replay rows (prompt -> completion), loss on the answer"),
    "dpo": Method("DPOTrainer", "DPOConfig", "dpo", {"beta": 0.1, "loss_type": ["sigmoid"], "sft_weight": 0.0},
                  options=("sft_weight",), about="preference pairs, DPO's sigmoid loss"),
    "ipo": Method("DPOTrainer", "DPOConfig", "dpo", {"beta": 0.1, "loss_type": ["ipo"], "sft_weight": 0.0},
                  options=("sft_weight",), about="preference pairs, IPO's squared loss (beta is its tau)"),
    "kto": Method("KTOTrainer", "KTOConfig", "kto", {"beta": 0.1}, about="thumbs-up/down rows (pairs are unpaired)"),
    "reward": Method("RewardTrainer", "RewardConfig", "reward", {"learning_rate": 1e-4}, model="reward", reference=False,
                     about="a reward model on the pairs, usable as --judge reward:PATH"),
    # RL: the model's own samples, scored by reward functions (persona refine --method grpo: the identity and
    # leak checks); beta > 0 keeps a KL term to the start (with LoRA the reference is the adapter switched off)
    "grpo": Method("GRPOTrainer", "GRPOConfig", "prompts", {"beta": 0.04, "num_generations": 4,
                                                           "max_completion_length": 64, "per_device_train_batch_size": 8},
                   reference=False, unset=("max_length",),
                   about="RL on prompts with a reward function (GRPO), KL to the start; run by persona refine"),
    "rloo": Method("RLOOTrainer", "RLOOConfig", "prompts", {"beta": 0.05, "num_generations": 4,
                                                           "max_completion_length": 64, "per_device_train_batch_size": 8},
                   reference=False, unset=("max_length",),
                   about="RL on prompts with a reward function (RLOO), KL to the start; run by persona refine"),
}


COLUMNS = {"dpo": ("prompt", "chosen", "rejected"), "reward": ("prompt", "chosen", "rejected"),
           "kto": ("prompt", "completion", "label"),
           "sft": ("prompt", "completion"), "prompts": ("prompt",)}


# persona's defaults for every method; any other TRL config or PEFT LoraConfig field can be set the same way
DEFAULTS: dict[str, Any] = {
    "learning_rate": 5e-5,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "num_train_epochs": 1,
    "max_steps": -1,
    "max_length": 512,
    "logging_steps": 1,
    "save_steps": 50,
    "save_total_limit": 2,
    "seed": 0,
    "report_to": "none",
    "include_num_input_tokens_seen": "non_padding",  # tokens trained on, for tokens/s in the summary
    "use_lora": True,
    "r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.0,  # 0.05 cost 19% of an SFT step on CPU (a random mask per LoRA input) for no gain here
    "target_modules": "all-linear",
}


LORA_FIELDS = ("r", "lora_alpha", "lora_dropout", "target_modules", "bias", "modules_to_save", "use_rslora")


def method_named(name: str) -> Method:
    if name not in METHODS:
        import difflib

        close = difflib.get_close_matches(name, METHODS, n=1)
        raise PersonaError(f"unknown method '{name}'", hint=(f"did you mean '{close[0]}'? " if close else "")
                           + "methods: " + ", ".join(METHODS))
    return METHODS[name]


def persona_fields(method: Method) -> tuple[str, ...]:
    """Settings persona reads itself (LoRA and method options); they never reach the TRL config."""
    return ("use_lora", "dtype") + LORA_FIELDS + method.options


def checkpointing_setting() -> str:
    """transformers' name for activation checkpointing: activation_checkpointing since 5.2x, before that
    gradient_checkpointing (vLLM's environment holds transformers < 5.20)."""
    from dataclasses import fields

    from transformers import TrainingArguments

    names = {f.name for f in fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def resolve_settings(name: str, config_path: str | Path | None, overrides: dict | None, card: dict) -> dict:
    """persona defaults < method defaults < dataset card < YAML < overrides, as one flat dict."""
    import torch

    method = method_named(name)
    settings = {k: v for k, v in {**DEFAULTS, **method.defaults}.items() if k not in method.unset}
    if method.dataset == "kto":  # the card's weights put the weighted ratio in TRL's recommended range
        weights = card.get("kto_weights") or {}
        settings["desirable_weight"] = weights.get("desirable_weight", 1.0)
        settings["undesirable_weight"] = weights.get("undesirable_weight", 1.0)
    gpu = torch.cuda.is_available()
    checkpointing = checkpointing_setting()
    settings.update({checkpointing: False, "use_cpu": not gpu})
    user = _read_yaml_settings(Path(config_path), name) if config_path is not None else {}
    user.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for other in {"activation_checkpointing", "gradient_checkpointing"} - {checkpointing}:
        if other in user:  # the same setting under the name this transformers does not know
            user[checkpointing] = user.pop(other)
    settings.update(user)
    settings.update(training_precision(user, "cuda" if gpu else "cpu"))
    if "sft_weight" in method.options and settings.get("sft_weight"):  # TRL's SFT term beside the preference loss
        base = [t for t in settings["loss_type"] if t != "sft"]
        settings["loss_type"] = base + ["sft"]
        settings["loss_weights"] = [1.0] * len(base) + [float(settings["sft_weight"])]
    return settings


def training_precision(user: dict, device: str) -> dict:
    """`dtype` and TRL's `bf16`/`fp16` for a run: the `dtype` setting if given, else the user's own `bf16` or
    `fp16`, else persona.precision's choice for the device. bf16 is autocast: the model loads in fp32, so the
    LoRA weights and the optimizer state stay fp32 while matmuls run in bf16."""
    from persona.precision import compute_dtype

    if user.get("dtype") is not None:
        dtype = compute_dtype(device, user["dtype"])
    elif user.get("bf16") is not None or user.get("fp16") is not None:
        dtype = compute_dtype(device, "bf16" if user.get("bf16") else "fp16" if user.get("fp16") else "fp32")
    else:
        dtype = compute_dtype(device)
    out = {"dtype": dtype, "bf16": dtype == "bfloat16"}
    if dtype == "float16" or "fp16" in user:
        out["fp16"] = dtype == "float16"
    return out


def _read_yaml_settings(path: Path, name: str) -> dict:
    """A training config (--config): a flat mapping of TRL / PEFT field names, each name checked at its
    file:line:col against what method `name` takes."""
    from persona.errors import SpecError
    from persona.yaml_source import read_yaml

    try:
        doc = read_yaml(path, str(path))
    except SpecError as e:
        raise SpecError(e.problems, then="run the command again") from None
    if doc.data is None:
        return {}
    if not isinstance(doc.data, dict):
        raise PersonaError(f"{path}: a training config is a flat mapping of TRL / PEFT field names",
                           hint="e.g. learning_rate: 5.0e-5 and beta: 0.1, one per line")
    problems = [doc.problem((key,), message, hint, key=True) for key, message, hint in check_settings(name, doc.data)]
    if problems:
        raise SpecError(problems, then="run the command again")
    return doc.data


def trl_class(name: str):
    """A class of TRL's by name: "DPOTrainer", or "experimental.orpo.ORPOTrainer" for its experimental ones."""
    import importlib

    module, _, cls = ("." + name).rpartition(".")
    return getattr(importlib.import_module("trl" + module), cls)


def check_settings(name: str, overrides: dict) -> list[tuple[str, str, str]]:
    """(setting, message, hint) for each name in `overrides` that neither TRL's config of `name` nor LoRA
    takes: what `persona run` reports at the job file's line before anything trains."""
    import difflib
    import inspect

    method = METHODS[name]
    cls = trl_class(method.config)
    accepted = set(inspect.signature(cls).parameters) | set(persona_fields(method))
    found = []
    for key in overrides:
        if key not in accepted:
            close = difflib.get_close_matches(key, sorted(accepted), n=1)
            found.append((key, f"'{key}' is not a setting of {cls.__name__} or LoRA",
                          f"did you mean '{close[0]}'?" if close else "see the TRL docs of " + cls.__name__))
    return found


def trl_config(name: str, settings: dict, output: TrainOutput):
    """The TRL config object; unknown field names become a PersonaError with did-you-mean."""
    method = METHODS[name]
    cls = trl_class(method.config)
    unknown = check_settings(name, settings)
    if unknown:
        raise PersonaError(unknown[0][1], hint=unknown[0][2])
    ours = persona_fields(method)
    fields = {k: v for k, v in settings.items() if k not in ours}
    try:
        return cls(output_dir=str(output.path), **fields)
    except (ValueError, TypeError) as e:
        raise PersonaError(f"invalid training settings for {name}: {e}", hint="check the values in --config / --set")
