"""`persona train`: fine-tune a model on persona's datasets (or your own, in TRL's formats) with TRL and PEFT.

    result = train("runs/brand", method="dpo")                    # the run's datasets/dpo, LoRA, default model
    result = train("runs/brand", method="ipo", overrides={"beta": 0.5})
    result = train("thumbs.jsonl", method="kto", model="path/to/model")   # prompt/completion/label rows

Methods, all TRL's own trainers and losses:
  dpo     DPOTrainer, loss_type ["sigmoid"], beta 0.1; `sft_weight: w` adds the SFT term (["sigmoid", "sft"],
          loss_weights [1, w]) to keep chosen log-probs from collapsing; `loss_type` takes any TRL DPO loss
  ipo     DPOTrainer, loss_type ["ipo"], beta is IPO's tau (the loss starts near (1/(2*beta))^2: 25 at 0.1)
  kto     KTOTrainer, desirable/undesirable weights from the dataset card; paired rows are unpaired first
  reward  RewardTrainer on the pairs: a reward model usable as `--judge reward:PATH`

Settings are one flat mapping of TRL / PEFT field names: persona's defaults < a YAML file (--config) <
command-line overrides. The resolved settings are printed and saved beside the output. LoRA is the
default (the reference model is the base with the adapter disabled: no second copy in memory);
`use_lora: false` trains every weight. Device-aware: fp32 and no gradient checkpointing on CPU, bf16 on GPU.
Runs under `accelerate launch` unchanged.

Output folder: the adapter (or full model), tokenizer and chat template, `persona_train.yaml` (resolved
settings), `metrics.json` (every logged step), `README.md` (a model card), and with `merge=True` a
merged model in `merged/`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from persona.errors import PersonaError

METHODS = ("dpo", "ipo", "kto", "reward")
PAIR_COLUMNS = ("prompt", "chosen", "rejected")
KTO_COLUMNS = ("prompt", "completion", "label")

# persona's defaults; any other TRL config or PEFT LoraConfig field can be set the same way
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
    "beta": 0.1,
    "use_lora": True,
    "r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "target_modules": "all-linear",
    "sft_weight": 0.0,
}
LORA_FIELDS = ("r", "lora_alpha", "lora_dropout", "target_modules", "bias", "modules_to_save", "use_rslora")
PERSONA_FIELDS = ("use_lora", "sft_weight") + LORA_FIELDS


@dataclass
class TrainResult:
    output_dir: Path
    method: str
    settings: dict
    metrics: list = field(default_factory=list)  # every log entry (loss, rewards, margins, ...)
    seconds: float = 0.0
    changed_parameters: int = 0  # trainable tensors that differ from their initial values
    merged_dir: Path | None = None
    reward: dict | None = None  # reward models: pairwise accuracy on the held-out split, the judge's centre


class Interrupted(Exception):
    """Ctrl-C during training: a checkpoint was saved, `--resume` continues from it."""

    def __init__(self, checkpoint: Path | None):
        super().__init__(str(checkpoint))
        self.checkpoint = checkpoint


def resolve_settings(method: str, config_path: str | Path | None, overrides: dict | None, card: dict) -> dict:
    """persona defaults < method defaults < dataset card < YAML < overrides, as one flat dict."""
    import torch

    settings = dict(DEFAULTS)
    if method == "ipo":
        settings["loss_type"] = ["ipo"]
    elif method == "dpo":
        settings["loss_type"] = ["sigmoid"]
    elif method == "kto":
        weights = card.get("kto_weights") or {}
        settings["desirable_weight"] = weights.get("desirable_weight", 1.0)
        settings["undesirable_weight"] = weights.get("undesirable_weight", 1.0)
    if method == "reward":
        settings.pop("beta")
        settings["learning_rate"] = 1e-4
    gpu = torch.cuda.is_available()
    settings.update(bf16=gpu, activation_checkpointing=False, use_cpu=not gpu)
    if config_path is not None:
        settings.update(_read_yaml_settings(Path(config_path)))
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if method in ("dpo", "ipo") and settings.get("sft_weight"):
        base = [t for t in settings["loss_type"] if t != "sft"]
        settings["loss_type"] = base + ["sft"]
        settings["loss_weights"] = [1.0] * len(base) + [float(settings["sft_weight"])]
    return settings


def _read_yaml_settings(path: Path) -> dict:
    from persona.yaml_source import read_yaml

    doc = read_yaml(path, str(path))
    if doc.data is None:
        return {}
    if not isinstance(doc.data, dict):
        raise PersonaError(f"{path}: a training config is a flat mapping of TRL / PEFT field names",
                           hint="e.g. learning_rate: 5.0e-5 and beta: 0.1, one per line")
    return doc.data


def _trl_config(method: str, settings: dict, output_dir: Path):
    """The TRL config object; unknown field names become a PersonaError with did-you-mean."""
    import difflib
    import inspect

    from trl import DPOConfig, KTOConfig, RewardConfig

    cls = {"dpo": DPOConfig, "ipo": DPOConfig, "kto": KTOConfig, "reward": RewardConfig}[method]
    accepted = set(inspect.signature(cls).parameters)
    fields = {k: v for k, v in settings.items() if k not in PERSONA_FIELDS}
    unknown = [k for k in fields if k not in accepted]
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(accepted | set(PERSONA_FIELDS)), n=1)
        raise PersonaError(f"'{unknown[0]}' is not a setting of {cls.__name__} or LoRA",
                           hint=f"did you mean '{close[0]}'?" if close else "see the TRL docs of " + cls.__name__)
    try:
        return cls(output_dir=str(output_dir), **fields)
    except (ValueError, TypeError) as e:
        raise PersonaError(f"invalid training settings for {method}: {e}", hint="check the values in --config / --set")


def find_dataset(source: str | Path, method: str) -> tuple[Any, dict, str]:
    """(DatasetDict, card numbers, where it came from) for a run folder, a dataset folder or a JSONL file."""
    from datasets import DatasetDict, load_dataset

    path = Path(source)
    if (path / "run.json").exists():
        if not (path / "datasets" / "build.json").exists():
            raise PersonaError(f"{path} has no datasets yet", hint=f"run: persona build {path}")
        path = path / "datasets" / ("kto" if method == "kto" else "dpo")
    build = path.parent / "build.json"  # persona build's numbers (KTO weights, spec hash) sit beside the folder
    card = json.loads(build.read_text(encoding="utf-8")) if path.is_dir() and build.exists() else {}
    if path.is_dir():
        try:
            data = load_dataset(str(path))
        except Exception as e:  # datasets raises many types for an unreadable folder
            raise PersonaError(f"{path}: not a dataset folder ({type(e).__name__}: {str(e).splitlines()[0][:160]})",
                               hint="give a run folder, a folder written by persona build, or a .jsonl file")
    elif path.is_file():
        if not path.read_bytes().strip():
            raise PersonaError(f"{path}: the file is empty", hint="one JSON object per line, in TRL's format (see the README)")
        try:
            data = DatasetDict({"train": load_dataset("json", data_files=str(path), split="train")})
        except Exception as e:
            raise PersonaError(f"{path}: cannot read it as JSON lines ({type(e).__name__})",
                               hint="one JSON object per line, in TRL's format (see the README)")
    else:
        raise PersonaError(f"dataset '{source}' not found", hint="give a run folder, a dataset folder or a .jsonl file")
    return data, card, str(path)


def check_columns(data, method: str, where: str):
    """TRL-format checks with clear messages; KTO on pairs is unpaired, DPO on unpaired rows is an error."""
    from trl import unpair_preference_dataset

    train = data["train"] if "train" in data else None
    if train is None or train.num_rows == 0:
        raise PersonaError(f"{where}: the training split is empty",
                           hint="generate more data, lower --margin in persona build, or check the file")
    columns = set(train.column_names)
    paired = {"chosen", "rejected"} <= columns
    unpaired = {"completion", "label"} <= columns
    if method == "kto":
        if paired and not unpaired:
            return unpair_preference_dataset(data)
        missing = [c for c in KTO_COLUMNS if c not in columns]
        if missing:
            raise PersonaError(f"{where}: KTO needs columns {', '.join(KTO_COLUMNS)}; missing {', '.join(missing)}",
                               hint="rows like {\"prompt\": ..., \"completion\": ..., \"label\": true}")
        return data
    if unpaired and not paired:
        raise PersonaError(f"{where}: {method.upper()} needs preference pairs, but these rows are unpaired "
                           "(prompt/completion/label)", hint="use --method kto for thumbs-up/down data")
    needed = PAIR_COLUMNS if method != "reward" else ("chosen", "rejected")
    missing = [c for c in needed if c not in columns]
    if missing:
        raise PersonaError(f"{where}: {method.upper()} needs columns {', '.join(needed)}; missing {', '.join(missing)}",
                           hint="rows like {\"prompt\": [...], \"chosen\": [...], \"rejected\": [...]}")
    return data


def load_base(model: str | None, method: str):
    """(model, tokenizer, name) for the base model; the embedded default when `model` is None."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from persona.backends.hf import resolve_model

    source, name = resolve_model(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        if method == "reward":
            lm = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, dtype=torch.float32)
        else:
            lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    except OSError as e:
        raise PersonaError(f"cannot load base model '{name}': {str(e).splitlines()[0]}",
                           hint="give a local model folder or .gguf file; hub ids need network access")
    if not tokenizer.chat_template:
        raise PersonaError(f"the tokenizer of '{name}' has no chat template",
                           hint="conversational datasets need one: use an instruct model or add chat_template")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if method == "reward":
        lm.config.pad_token_id = tokenizer.pad_token_id
    return lm, tokenizer, name


def train(source: str | Path, method: str = "dpo", model: str | None = None, config_path: str | Path | None = None,
          overrides: dict | None = None, output_dir: str | Path | None = None, overwrite: bool = False,
          resume: bool = False, merge: bool = False, on_log: Callable[[dict], None] | None = None,
          on_start: Callable[[dict, Path], None] | None = None) -> TrainResult:
    if method not in METHODS:
        import difflib

        close = difflib.get_close_matches(method, METHODS, n=1)
        raise PersonaError(f"unknown method '{method}'", hint=(f"did you mean '{close[0]}'? " if close else "")
                           + "methods: " + ", ".join(METHODS))
    data, card, where = find_dataset(source, method)
    from_pairs = method == "kto" and "train" in data and "chosen" in data["train"].column_names
    data = check_columns(data, method, where)
    if from_pairs:  # every pair gives one desirable and one undesirable row: balanced, so equal weights
        card = {**card, "kto_weights": {"desirable_weight": 1.0, "undesirable_weight": 1.0}}
    settings = resolve_settings(method, config_path, overrides, card)
    out = Path(output_dir) if output_dir else _default_output(source, method)
    if (out / "metrics.json").exists() and not (overwrite or resume):
        raise PersonaError(f"{out} already holds a finished training run",
                           hint="pass --overwrite to replace it, or --output-dir for another folder")
    out.mkdir(parents=True, exist_ok=True)
    if overwrite and not resume:  # a new run: the old run's checkpoints must not be resumed from later
        import shutil

        for old in out.glob("checkpoint-*"):
            shutil.rmtree(old, ignore_errors=True)
    args = _trl_config(method, settings, out)
    if on_start:
        on_start(settings, out)

    import torch
    from transformers import TrainerCallback

    lm, tokenizer, model_name = load_base(model, method)
    peft_config = None
    if settings["use_lora"]:
        from peft import LoraConfig

        peft_config = LoraConfig(task_type="SEQ_CLS" if method == "reward" else "CAUSAL_LM",
                                 **{k: settings[k] for k in LORA_FIELDS if k in settings})
    logs: list[dict] = []
    stop = {"requested": False}

    class Record(TrainerCallback):
        def on_log(self, args, state, control, logs_=None, **kwargs):
            entry = {"step": state.global_step, **(kwargs.get("logs") or logs_ or {})}
            logs.append(entry)
            if on_log:
                on_log(entry)

        def on_step_end(self, args, state, control, **kwargs):
            if stop["requested"]:  # Ctrl-C: finish this step, save a checkpoint, stop
                control.should_save = True
                control.should_training_stop = True
            return control

    trainer = _make_trainer(method, lm, tokenizer, args, data, peft_config, [Record()])
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    _write_settings(out, method, model, model_name, where, settings)
    started = time.perf_counter()
    checkpoint = _last_checkpoint(out) if resume else None
    try:
        with _first_ctrl_c_stops_gently(stop):
            trainer.train(resume_from_checkpoint=checkpoint)
    except torch.OutOfMemoryError:
        raise PersonaError("out of memory on the GPU",
                           hint="lower per_device_train_batch_size or max_length, keep LoRA on, or set "
                                "activation_checkpointing: true") from None
    if stop["requested"]:
        saved = _last_checkpoint(out)
        raise Interrupted(Path(saved) if saved else None)
    changed = sum(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters() if n in before)
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    result = TrainResult(out, method, settings, logs, time.perf_counter() - started, changed)
    if method == "reward":
        from persona.judges.reward import CALIBRATION_FILE, RewardScorer, calibrate

        scorer = RewardScorer(trainer.model, tokenizer, max_length=settings.get("max_length") or 1024)
        result.reward = calibrate(scorer, data["train"], data["eval"] if "eval" in data else [])
        (out / CALIBRATION_FILE).write_text(json.dumps(result.reward, indent=2) + "\n", encoding="utf-8")
    if merge and settings["use_lora"]:
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(out / "merged"))
        tokenizer.save_pretrained(str(out / "merged"))
        result.merged_dir = out / "merged"
    (out / "metrics.json").write_text(json.dumps(logs, indent=2) + "\n", encoding="utf-8")
    (out / "README.md").write_text(_model_card(result, model_name, where, card), encoding="utf-8")
    return result


def _make_trainer(method, lm, tokenizer, args, data, peft_config, callbacks):
    from trl import DPOTrainer, KTOTrainer, RewardTrainer

    cls = {"dpo": DPOTrainer, "ipo": DPOTrainer, "kto": KTOTrainer, "reward": RewardTrainer}[method]
    if method != "reward":
        cls = _with_reusable_reference_cache(cls)
    eval_split = data["eval"] if "eval" in data and data["eval"].num_rows else None
    return cls(model=lm, args=args, train_dataset=data["train"], eval_dataset=eval_split, processing_class=tokenizer,
               peft_config=peft_config, callbacks=callbacks)


def _with_reusable_reference_cache(cls):
    """TRL caches precomputed reference log-probs under a fingerprint of (dataset, reference weights), but the
    fingerprint of its last preprocessing step is random, so a second run never finds the first run's cache.
    Fingerprinting the tokenized rows by content makes the cache hit across runs (same data, same model)."""

    class Trainer(cls):
        def _precompute_ref_logps(self, dataset, name, batch_size):
            dataset._fingerprint = content_fingerprint(dataset)
            return super()._precompute_ref_logps(dataset, name, batch_size)

    Trainer.__name__ = Trainer.__qualname__ = cls.__name__
    return Trainer


def content_fingerprint(dataset) -> str:
    """A hash of a datasets.Dataset's rows (in order), independent of how it was made."""
    import hashlib

    digest = hashlib.sha256()
    for batch in dataset.with_format(None).iter(batch_size=1000):
        digest.update(json.dumps(batch, sort_keys=True, default=str).encode("utf-8"))
    return digest.hexdigest()[:16]


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _default_output(source, method: str) -> Path:
    path = Path(source)
    base = path if (path / "run.json").exists() else Path("runs") / path.stem
    return base / f"train-{method}"


class _first_ctrl_c_stops_gently:
    """While training: the first Ctrl-C asks the trainer to save a checkpoint after this step and stop; a
    second one stops at once (KeyboardInterrupt). Only in the main thread, where signals arrive."""

    def __init__(self, stop: dict):
        self.stop, self.previous = stop, None

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        import logging

        if self.stop["requested"]:
            raise KeyboardInterrupt
        self.stop["requested"] = True
        logging.getLogger("persona").warning("Ctrl-C: saving a checkpoint after this step (Ctrl-C again to quit now)")

    def __exit__(self, *exc):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


def load_trained(path: str | Path, method: str | None = None):
    """(model, tokenizer) for the output of `persona train`: a LoRA adapter on its base model, or a full
    model. A plain PEFT adapter folder or model folder works too. `method` "reward" loads a scorer."""
    import torch
    import yaml
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise PersonaError(f"model or adapter folder '{path}' not found", hint="give the output folder of persona train")
    settings_file = path / "persona_train.yaml"
    settings = yaml.safe_load(settings_file.read_text(encoding="utf-8")) if settings_file.is_file() else {}
    method = method or settings.get("method")
    tokenizer = None
    adapter = path / "adapter_config.json"
    if adapter.is_file():
        from peft import PeftModel

        base = settings.get("base_model") if "base_model" in settings else \
            json.loads(adapter.read_text())["base_model_name_or_path"]
        try:
            lm, tokenizer, _ = load_base(base, method or "dpo")
        except PersonaError as e:
            raise PersonaError(f"the base model of the adapter in {path} cannot be loaded: {e.message}",
                               hint=f"the adapter was trained on '{base or 'the embedded default model'}'; "
                                    "put that model back or set base_model in persona_train.yaml") from None
        lm = PeftModel.from_pretrained(lm, str(path))
    elif (path / "config.json").is_file():
        cls = AutoModelForSequenceClassification if method == "reward" else AutoModelForCausalLM
        lm = cls.from_pretrained(str(path), dtype=torch.float32)
    else:
        raise PersonaError(f"{path} holds neither a LoRA adapter nor a model",
                           hint="give the output folder of persona train (adapter_config.json or config.json)")
    if (path / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer is None:
        raise PersonaError(f"{path} has no tokenizer", hint="save one beside the model (persona train does)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lm.eval()
    return lm, tokenizer


def _last_checkpoint(out: Path) -> str | None:
    checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(checkpoints[-1]) if checkpoints else None


def _write_settings(out: Path, method: str, base: str | None, model: str, where: str, settings: dict) -> None:
    import yaml

    text = yaml.safe_dump({"method": method, "model": model, "base_model": base, "dataset": where, **settings},
                          sort_keys=False)
    (out / "persona_train.yaml").write_text(text, encoding="utf-8")


def _model_card(result: TrainResult, model: str, where: str, card: dict) -> str:
    losses = [m["loss"] for m in result.metrics if "loss" in m]
    lines = [f"# {result.method.upper()} fine-tune of {model}", "",
             f"Trained by persona on `{where}` ({'LoRA adapter' if result.settings['use_lora'] else 'full model'}).", "",
             f"- method: {result.method} (TRL {'DPOTrainer' if result.method in ('dpo', 'ipo') else result.method.upper() + 'Trainer'})",
             f"- dataset spec hash: {card.get('spec_hash', 'n/a')}; judge: {card.get('judge', 'n/a')}",
             f"- steps logged: {len(result.metrics)}; first loss {losses[0] if losses else 'n/a'}, "
             f"last loss {losses[-1] if losses else 'n/a'}",
             f"- training time: {result.seconds:.1f} s", "", "Settings (persona_train.yaml):", "", "```yaml"]
    lines += [f"{k}: {json.dumps(v)}" for k, v in result.settings.items()]
    lines += ["```", ""]
    if result.reward:
        r = result.reward
        lines += [f"Reward model: pairwise accuracy {_pct(r['eval_pairwise_accuracy'])} on {r['eval_pairs']} held-out "
                  f"pairs ({_pct(r['train_pairwise_accuracy'])} on {r['train_pairs']} training pairs); use it as "
                  f"a judge with `--judge reward:{result.output_dir}`.", ""]
    lines += ["Evaluation numbers appear here once `persona eval` has run.", ""]
    return "\n".join(lines)
