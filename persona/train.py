"""`persona train`: fine-tune a model on persona's datasets (or your own, in TRL's formats) with TRL and PEFT.

    result = train("runs/brand")                                  # SFT on the run's datasets/sft, LoRA, the run's target model
    result = train("runs/brand", method="dpo", start="runs/brand/train-sft")
    result = train("runs/brand", method="ipo", overrides={"beta": 0.5})
    result = train("thumbs.jsonl", method="kto", model="path/to/model")   # prompt/completion/label rows

Methods are rows of METHODS, each TRL's own trainer and loss; adding one is a row (plus, at most, one
function for what its data or output need):
  sft     SFTTrainer on the run's SFT rows (demonstrations, accepted answers, replay), loss on the answer only;
          the supervised start preference training needs at this scale (see docs/experiment.md)
  dpo     DPOTrainer, loss_type ["sigmoid"], beta 0.1; `sft_weight: w` adds the SFT term (["sigmoid", "sft"],
          loss_weights [1, w]) to keep chosen log-probs from collapsing; `loss_type` takes any TRL DPO loss
  ipo     DPOTrainer, loss_type ["ipo"], beta is IPO's tau (the loss starts near (1/(2*beta))^2: 25 at 0.1)
  kto     KTOTrainer, desirable/undesirable weights from the dataset card; paired rows are unpaired first
  reward  RewardTrainer on the pairs: a reward model usable as `--judge reward:PATH`

`start=PATH` (--from) starts from a trained output, e.g. an SFT one: its weights (adapter merged in) are the
model that trains, and the reference of DPO/IPO/KTO (the natural SFT -> preference sequence). The output is
made loadable by plain PEFT: see _standalone.

The chat template: rows carry their own system message, and the saved tokenizer's template is changed to
inject persona's default system prompt (the dataset's, or `system_prompt`) where the base's injected its
own - SmolLM2's names SmolLM and Hugging Face - so the trained model is served as it was trained.

Settings are one flat mapping of TRL / PEFT field names: persona's defaults < the method's < a YAML file
(--config) < command-line overrides. The resolved settings are printed and saved beside the output. LoRA is
the default (the reference model is the base with the adapter disabled: no second copy in memory);
`use_lora: false` trains every weight. Precision (`dtype`: auto, bf16 or fp32) is persona.precision's choice for
the device - bf16 autocast on a GPU that supports it or a CPU with AMX, fp32 otherwise - with the weights and
optimizer state in fp32; gradient checkpointing is off (on CPU it only costs time).
Runs under `accelerate launch` unchanged.

The output folder (persona.run.TrainOutput): the adapter (or full model), tokenizer and chat template, the
resolved settings, every logged step, a model card (`model_card`, rewritten by `persona eval` with its
numbers), and with `merge=True` a merged model.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from persona.errors import PersonaError
from persona.run import DatasetFolder, RunFolder, TrainOutput


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
    "reward": Method("RewardTrainer", "RewardConfig", "dpo", {"learning_rate": 1e-4}, model="reward", reference=False,
                     about="a reward model on the pairs, usable as --judge reward:PATH"),
}
COLUMNS = {"dpo": ("prompt", "chosen", "rejected"), "kto": ("prompt", "completion", "label"),
           "sft": ("prompt", "completion")}

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


@dataclass
class TrainResult:
    output_dir: Path
    method: str
    settings: dict
    metrics: list = field(default_factory=list)  # every log entry (loss, rewards, margins, ...)
    seconds: float = 0.0
    changed_parameters: int = 0  # trainable tensors that differ from their initial values
    tokens: int | None = None  # non-padding input tokens trained on (every epoch)

    @property
    def tokens_per_second(self) -> float | None:
        return self.tokens / self.seconds if self.tokens and self.seconds else None
    merged_dir: Path | None = None
    reward: dict | None = None  # reward models: pairwise accuracy on the held-out split, the judge's centre


class Interrupted(Exception):
    """Ctrl-C during training: a checkpoint was saved, `--resume` continues from it."""

    def __init__(self, checkpoint: Path | None):
        super().__init__(str(checkpoint))
        self.checkpoint = checkpoint


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


def resolve_settings(name: str, config_path: str | Path | None, overrides: dict | None, card: dict) -> dict:
    """persona defaults < method defaults < dataset card < YAML < overrides, as one flat dict."""
    import torch

    method = method_named(name)
    settings = {**DEFAULTS, **method.defaults}
    if method.dataset == "kto":  # the card's weights put the weighted ratio in TRL's recommended range
        weights = card.get("kto_weights") or {}
        settings["desirable_weight"] = weights.get("desirable_weight", 1.0)
        settings["undesirable_weight"] = weights.get("undesirable_weight", 1.0)
    gpu = torch.cuda.is_available()
    settings.update(activation_checkpointing=False, use_cpu=not gpu)
    user = _read_yaml_settings(Path(config_path)) if config_path is not None else {}
    user.update({k: v for k, v in (overrides or {}).items() if v is not None})
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


def _read_yaml_settings(path: Path) -> dict:
    from persona.yaml_source import read_yaml

    doc = read_yaml(path, str(path))
    if doc.data is None:
        return {}
    if not isinstance(doc.data, dict):
        raise PersonaError(f"{path}: a training config is a flat mapping of TRL / PEFT field names",
                           hint="e.g. learning_rate: 5.0e-5 and beta: 0.1, one per line")
    return doc.data


def _trl_class(name: str):
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
    cls = _trl_class(method.config)
    accepted = set(inspect.signature(cls).parameters) | set(persona_fields(method))
    found = []
    for key in overrides:
        if key not in accepted:
            close = difflib.get_close_matches(key, sorted(accepted), n=1)
            found.append((key, f"'{key}' is not a setting of {cls.__name__} or LoRA",
                          f"did you mean '{close[0]}'?" if close else "see the TRL docs of " + cls.__name__))
    return found


def _trl_config(name: str, settings: dict, output: TrainOutput):
    """The TRL config object; unknown field names become a PersonaError with did-you-mean."""
    method = METHODS[name]
    cls = _trl_class(method.config)
    unknown = check_settings(name, settings)
    if unknown:
        raise PersonaError(unknown[0][1], hint=unknown[0][2])
    ours = persona_fields(method)
    fields = {k: v for k, v in settings.items() if k not in ours}
    try:
        return cls(output_dir=str(output.path), **fields)
    except (ValueError, TypeError) as e:
        raise PersonaError(f"invalid training settings for {name}: {e}", hint="check the values in --config / --set")


def find_dataset(source: str | Path, name: str) -> tuple[Any, dict, str, RunFolder | None]:
    """(DatasetDict, card numbers, where it came from, its run folder) for a run folder, a dataset folder or a
    JSONL file."""
    from datasets import DatasetDict, load_dataset

    path = Path(source)
    run = RunFolder(path) if RunFolder(path).exists() else None
    if run is not None:
        if run.build() is None:
            raise PersonaError(f"{path} has no datasets yet", hint=f"run: persona build {path}")
        path = run.dataset(METHODS[name].dataset).path
    folder = DatasetFolder(path)
    card = folder.build()
    run = run or folder.run()
    files = [path] if path.is_file() else [f for f in (folder.split("train"), folder.split("eval")) if f.is_file()]
    check_rows(files)
    if path.is_dir():
        try:
            data = load_dataset(str(path))
        except Exception as e:  # datasets raises many types for an unreadable folder
            detail = (str(e).splitlines() or [""])[0][:160]
            raise PersonaError(f"{path}: not a dataset folder ({type(e).__name__}{': ' + detail if detail else ''})",
                               hint="give a run folder, a folder written by persona build, or a .jsonl file")
    elif path.is_file():
        if not path.read_bytes().strip():
            raise PersonaError(f"{path}: the file is empty", hint="one JSON object per line, in TRL's format (see docs/guide.md, 'Judging and datasets')")
        try:
            data = DatasetDict({"train": load_dataset("json", data_files=str(path), split="train")})
        except Exception as e:
            raise PersonaError(f"{path}: cannot read it as JSON lines ({type(e).__name__})",
                               hint="one JSON object per line, in TRL's format (see docs/guide.md, 'Judging and datasets')")
    else:
        raise PersonaError(f"dataset '{source}' not found", hint="give a run folder, a dataset folder or a .jsonl file")
    return data, card, str(path), run


ROLES = ("system", "user", "assistant", "tool")
TEXT_FIELDS = ("prompt", "chosen", "rejected", "completion", "messages")
MAX_ROW_PROBLEMS = 20


def check_rows(files: list[Path]) -> None:
    """Every row of the JSONL files, checked before any training, each problem as file:line: what is wrong.

    A row is a JSON object of one format throughout (pairs: prompt/chosen/rejected; thumbs: prompt/completion/
    label; SFT: prompt/completion or messages); every text field is non-empty text or a list of messages with
    a known role and text content, the same kind in every row; chosen differs from rejected; a label is true or
    false."""
    problems: list[str] = []
    first: dict[str, tuple[str, str]] = {}  # what the first row had: field -> (kind, where)
    for file in files:
        try:
            lines = file.read_bytes().split(b"\n")
        except OSError as e:
            raise PersonaError(f"{file}: cannot read it ({e.strerror or e})", hint="check the file's permissions")
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            where = f"{file}:{number}"
            problems += _row_problems(raw, where, first)
            if len(problems) >= MAX_ROW_PROBLEMS:
                break
    if problems:
        more = f" (and more; showing the first {MAX_ROW_PROBLEMS})" if len(problems) >= MAX_ROW_PROBLEMS else ""
        raise PersonaError("\n".join(problems[:MAX_ROW_PROBLEMS]) + more,
                           hint="fix or remove those rows; persona's own datasets (persona build) have this format")


def _row_problems(raw: bytes, where: str, first: dict) -> list[str]:
    import math

    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        return [f"{where}: not valid UTF-8 (byte 0x{raw[e.start]:02x})"]
    except (json.JSONDecodeError, RecursionError, ValueError) as e:
        return [f"{where}: not a JSON object ({getattr(e, 'msg', type(e).__name__)})"]
    if not isinstance(row, dict):
        return [f"{where}: a row is a JSON object, got {type(row).__name__}"]
    out = []
    shape = "pairs" if {"chosen", "rejected"} <= set(row) else "thumbs" if "label" in row else \
        "messages" if "messages" in row else "prompt-completion" if "completion" in row else None
    if shape is None and ({"chosen", "rejected"} & set(row)):
        missing = ", ".join(c for c in ("prompt", "chosen", "rejected") if c not in row)
        return [f"{where}: a preference pair needs prompt, chosen and rejected; missing {missing}"]
    if shape is None:
        return [f"{where}: no chosen/rejected, completion or messages column (columns: {', '.join(sorted(row)) or 'none'})"]
    if first.setdefault("shape", (shape, where))[0] != shape:
        out.append(f"{where}: a {shape} row among {first['shape'][0]} rows (first at {first['shape'][1]}): one "
                   "format per dataset")
    for column in TEXT_FIELDS:
        if column not in row:
            continue
        value, kind = row[column], None
        if isinstance(value, str):
            kind = "text"
            if not value.strip():
                out.append(f"{where}: {column} is empty")
        elif isinstance(value, list) and value:
            kind = "messages"
            for i, message in enumerate(value):
                if not isinstance(message, dict) or message.get("role") not in ROLES:
                    role = message.get("role") if isinstance(message, dict) else message
                    out.append(f"{where}: {column}[{i}] has role {role!r}; roles are {', '.join(ROLES)}")
                elif not isinstance(message.get("content"), str):
                    out.append(f"{where}: {column}[{i}] has no text content")
                elif not message["content"].strip() and message["role"] != "system":
                    out.append(f"{where}: {column}[{i}] ({message['role']}) is empty")
        else:
            out.append(f"{where}: {column} must be text or a list of messages, got "
                       f"{'nothing' if value is None else 'an empty list' if value == [] else type(value).__name__}")
        if kind and first.setdefault(column, (kind, where))[0] != kind:
            out.append(f"{where}: {column} is {kind} where the rows before have {first[column][0]} "
                       f"(first at {first[column][1]}): one format per dataset")
    if shape == "pairs" and row.get("chosen") == row.get("rejected"):
        out.append(f"{where}: chosen and rejected are the same: the pair teaches nothing")
    if "label" in row and not isinstance(row["label"], bool):
        label = row["label"]
        shown = "NaN" if isinstance(label, float) and math.isnan(label) else json.dumps(label)
        out.append(f"{where}: label must be true or false, got {shown}")
    return out


def check_columns(data, name: str, where: str):
    """TRL-format checks with clear messages; KTO rows from pairs are unpaired, DPO on unpaired rows is an error."""
    from trl import unpair_preference_dataset

    method = METHODS[name]
    train_split = data["train"] if "train" in data else None
    if train_split is None or train_split.num_rows == 0:
        raise PersonaError(f"{where}: the training split is empty",
                           hint="generate more data, lower --margin in persona build, or check the file")
    columns = set(train_split.column_names)
    paired = {"chosen", "rejected"} <= columns
    unpaired = {"completion", "label"} <= columns
    needed = COLUMNS[method.dataset]
    if method.dataset == "sft":
        return _sft_rows(data, columns, paired, where)
    if method.dataset == "kto":
        if paired and not unpaired:
            return unpair_preference_dataset(data)
        missing = [c for c in needed if c not in columns]
        if missing:
            raise PersonaError(f"{where}: KTO needs columns {', '.join(needed)}; missing {', '.join(missing)}",
                               hint="rows like {\"prompt\": ..., \"completion\": ..., \"label\": true}")
        return data
    if unpaired and not paired:
        raise PersonaError(f"{where}: {name.upper()} needs preference pairs, but these rows are unpaired "
                           "(prompt/completion/label)", hint="use --method kto for thumbs-up/down data")
    if method.model == "reward":
        needed = ("chosen", "rejected")  # the reward trainer also takes pairs without a prompt
    missing = [c for c in needed if c not in columns]
    if missing:
        raise PersonaError(f"{where}: {name.upper()} needs columns {', '.join(needed)}; missing {', '.join(missing)}",
                           hint="rows like {\"prompt\": [...], \"chosen\": [...], \"rejected\": [...]}")
    return data


def _sft_rows(data, columns: set, paired: bool, where: str):
    """SFT reads prompt/completion rows or messages; thumbs rows keep their thumbs-up ones, pairs their chosen side."""
    if "messages" in columns or ({"prompt", "completion"} <= columns and "label" not in columns):
        return data
    if {"prompt", "completion", "label"} <= columns:
        return data.filter(lambda row: bool(row["label"])).remove_columns(["label"])
    if paired and "prompt" in columns:
        return data.remove_columns(["rejected"]).rename_column("chosen", "completion")
    raise PersonaError(f"{where}: SFT needs columns prompt, completion (or messages); found {', '.join(sorted(columns))}",
                       hint="rows like {\"prompt\": [...], \"completion\": [...]}, or a run folder's datasets/sft")


def train(source: str | Path, method: str = "sft", model: str | None = None, config_path: str | Path | None = None,
          overrides: dict | None = None, output_dir: str | Path | None = None, overwrite: bool = False,
          resume: bool = False, merge: bool = False, on_log: Callable[[dict], None] | None = None,
          on_start: Callable[[dict, Path], None] | None = None, start: str | Path | None = None,
          system_prompt: str | None = None, license: str | None = None) -> TrainResult:
    """Train `method` on `source` (a run folder, a dataset folder or a JSONL file). `start`: a trained output
    to start from (e.g. SFT before DPO); `system_prompt`: the default the saved chat template injects
    [default: the one the dataset's rows carry, from its build]; `license`: the model card's license (a Hub
    license id) [default: the dataset's, from its build]."""
    from persona.dataset import check_license

    check_license(license)
    spec = method_named(method)
    data, card, where, run = find_dataset(source, method)
    if start is not None:
        from persona.models import check_start

        check_start(start, model, spec.model)  # before any work: a wrong --from fails at once
    from_pairs = spec.dataset == "kto" and "train" in data and "chosen" in data["train"].column_names
    data = check_columns(data, method, where)
    if from_pairs:  # every pair gives one desirable and one undesirable row: balanced, so equal weights
        card = {**card, "kto_weights": {"desirable_weight": 1.0, "undesirable_weight": 1.0}}
    settings = resolve_settings(method, config_path, overrides, card)
    if model is None and start is None and run is not None:  # the model `persona generate --target-model` named
        model = (run.info().get("config") or {}).get("target_model")
    if system_prompt is not None:
        system_prompt = _system_prompt_text(system_prompt, run)
    output = TrainOutput(output_dir) if output_dir else _default_output(source, run, method, start)
    with output.lock():  # one training run per output folder
        return _train(method, spec, data, card, where, run, settings, output, model, overwrite, resume, merge,
                      on_log, on_start, start, system_prompt, license)


def _train(method, spec, data, card, where, run, settings, output, model, overwrite, resume, merge, on_log, on_start,
           start, system_prompt, license) -> TrainResult:
    if output.metrics_file.exists() and not (overwrite or resume):
        raise PersonaError(f"{output.path} already holds a finished training run",
                           hint="pass --overwrite to replace it, or --output-dir for another folder")
    output.path.mkdir(parents=True, exist_ok=True)
    if overwrite and not resume:  # a new run: the old run's checkpoints must not be resumed from later
        import shutil

        for old in output.checkpoints():
            shutil.rmtree(old, ignore_errors=True)
    if resume and output.last_checkpoint() is not None:
        _same_precision_as_the_checkpoint(output, settings)
    args = _trl_config(method, settings, output)
    if on_start:
        on_start(settings, output.path)

    import torch
    from transformers import TrainerCallback

    from persona.models import load_base, load_start, public_model_id, template_default_system, with_default_system

    if start is not None:
        lm, tokenizer, model_name, base_default = load_start(start, spec.model)
        public_id = TrainOutput(start).settings().get("base_model_id")
    else:
        lm, tokenizer, model_name = load_base(model, spec.model)
        base_default = template_default_system(tokenizer)
        public_id = public_model_id(model)
    system = system_prompt if system_prompt is not None else card.get("system_prompt")
    _say_what_the_template_injects(model_name, base_default, system)
    chat_template = with_default_system(tokenizer, system) if system is not None else tokenizer.chat_template
    ref_model = None
    if start is not None and not settings["use_lora"] and spec.reference:
        import copy  # TRL would reload the reference from the base's folder, not the start's weights

        ref_model = copy.deepcopy(lm).eval()
    peft_config = None
    if settings["use_lora"]:
        from peft import LoraConfig

        peft_config = LoraConfig(task_type="SEQ_CLS" if spec.model == "reward" else "CAUSAL_LM",
                                 **{k: settings[k] for k in LORA_FIELDS if k in settings})
    logs: list[dict] = []
    stop = {"requested": False}

    class Record(TrainerCallback):
        def on_log(self, args, state, control, logs_=None, **kwargs):
            entry = {"step": state.global_step, **(kwargs.get("logs") or logs_ or {})}
            logs.append(entry)
            if on_log:
                on_log({**entry, "max_steps": state.max_steps})

        def on_step_end(self, args, state, control, **kwargs):
            if stop["requested"]:  # Ctrl-C: finish this step, save a checkpoint, stop
                control.should_save = True
                control.should_training_stop = True
            return control

    trainer = _make_trainer(method, lm, tokenizer, args, data, peft_config, [Record()], ref_model)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    output.write_settings({
        "method": method, "model": model_name, "base_model": model, "dataset": where,
        "run": str(run.path) if run else None, "start": str(start) if start is not None else None,
        "system_prompt": system, "base_template_default": base_default, "base_model_id": public_id,
        "license": license or (card.get("settings") or {}).get("license"),
        "data": {"kind": spec.dataset, "train_rows": data["train"].num_rows,
                 "eval_rows": data["eval"].num_rows if "eval" in data else 0,
                 "spec_hash": card.get("spec_hash"), "judge": card.get("judge")},
        **settings})
    started = time.perf_counter()
    checkpoint = output.last_checkpoint() if resume else None
    try:
        with _first_ctrl_c_stops_gently(stop), _fused_head_scores_answer_tokens_only():
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except torch.OutOfMemoryError:
        raise PersonaError("out of memory on the GPU",
                           hint="lower per_device_train_batch_size or max_length, keep LoRA on, or set "
                                "activation_checkpointing: true") from None
    if stop["requested"]:
        raise Interrupted(output.last_checkpoint())
    changed = sum(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters() if n in before)
    trainer.save_model(str(output.path))
    merged_whole = False
    if start is not None and settings["use_lora"]:  # an adapter over the start's merged weights: make it standalone
        public_id, merged_whole = _standalone(output, TrainOutput(start), trainer, public_id)
    if public_id and output.has_adapter():  # shareable: the adapter names its public base, not a local path
        output.name_adapter_base(public_id)
    tokenizer.chat_template = chat_template  # persona's default system prompt, not the base's identity
    tokenizer.save_pretrained(str(output.path))
    result = TrainResult(output.path, method, settings, logs, time.perf_counter() - started, changed,
                         tokens=trainer.state.num_input_tokens_seen or None)
    if spec.model == "reward":
        from persona.judges.reward import RewardScorer, calibrate

        scorer = RewardScorer(trainer.model, tokenizer, max_length=settings.get("max_length") or 1024)
        result.reward = calibrate(scorer, data["train"], data["eval"] if "eval" in data else [])
        output.write_reward(result.reward)
    if merge and settings["use_lora"] and not merged_whole:
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(output.merged))
        tokenizer.save_pretrained(str(output.merged))
        result.merged_dir = output.merged
    output.write_metrics(logs)
    write_model_card(output)
    return result


def _standalone(output: TrainOutput, start: TrainOutput, trainer, public_id: str | None) -> tuple[str | None, bool]:
    """Make a --from output loadable on its own by standard tools, which know nothing of persona's `start`.
    The adapter just saved holds what training added over the start's merged weights, yet PEFT would apply
    it to the base its config names. So: a start that is an adapter on a base (standalone itself) is stacked
    with the new one into one adapter on that base (exact; persona_train.yaml says `stacked: true`); a start
    that is a full model becomes the base the adapter names, by its path; anything else (DoRA, a start from
    an older persona) is saved as merged full weights. (the public base id to name, merged full weights?)"""
    from persona.models import adapter_base, stack_adapters

    recorded = output.settings()
    theirs = start.settings()
    if not start.has_adapter():  # a full model: the adapter's base is that folder
        output.name_adapter_base(str(start.path.resolve()))
        return None, False
    if (not theirs.get("start") or theirs.get("stacked")) and stack_adapters(
            adapter_base(start), start.path, output.path, output.path):
        output.write_settings({**recorded, "base_model": adapter_base(start), "stacked": True})
        return public_id, False
    merged = trainer.model.merge_and_unload()
    for name in ("adapter_model.safetensors", "adapter_model.bin", "adapter_config.json"):
        (output.path / name).unlink(missing_ok=True)
    merged.save_pretrained(str(output.path))
    output.write_settings({**recorded, "merged_whole": True})
    return None, True


_COMPACT_SWITCH = "compact = _use_triton(hidden_states.device)"


@contextmanager
def _fused_head_scores_answer_tokens_only():
    """TRL's fused LM head (log-probs without the full logits) projects only the positions that carry a label on
    Triton devices, but every position elsewhere - on CPU, prompt and padding tokens too, each onto the whole
    vocabulary - so that compiled backends see one shape. CPU compiles nothing, and the projection was a third
    of an SFT step there; with this switch on, an SFT step took 15% less (bench: the same losses to the last
    digit). It only flips that one decision, and only when TRL's source still makes it in that one place."""
    try:
        import inspect

        from trl.trainer import utils
        source = inspect.getsource(utils)
        original = utils._use_triton
    except (ImportError, AttributeError, OSError, TypeError):
        yield
        return
    if source.count("_use_triton(") != 1 or _COMPACT_SWITCH not in source:
        yield
        return
    utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        utils._use_triton = original


def _make_trainer(name, lm, tokenizer, args, data, peft_config, callbacks, ref_model=None):
    method = METHODS[name]
    cls = _trl_class(method.trainer)
    extra = {}
    if method.reference:
        cls = _with_reusable_reference_cache(cls)
        if ref_model is not None:
            extra["ref_model"] = ref_model
    eval_split = data["eval"] if "eval" in data and data["eval"].num_rows else None
    from transformers import PrinterCallback, ProgressCallback

    trainer = cls(model=lm, args=args, train_dataset=data["train"], eval_dataset=eval_split, processing_class=tokenizer,
                  peft_config=peft_config, callbacks=callbacks, **extra)
    for printer in (PrinterCallback, ProgressCallback):  # they print log dicts on stdout; persona shows progress
        trainer.remove_callback(printer)
    return trainer


def _say_what_the_template_injects(model: str, injected: str | None, system: str | None) -> None:
    """Warn when the base's chat template slips another identity into conversations without a system message."""
    import logging
    import re

    from persona.claims import OTHER_MAKERS, OTHER_MODELS

    if not injected:
        return
    named = [n for n in dict.fromkeys(OTHER_MODELS + OTHER_MAKERS) if re.search(rf"\b{re.escape(n)}\b", injected)]
    if not named:
        return
    instead = (f"the trained model's template injects persona's instead: {system!r}" if system is not None else
               "the trained model keeps it (pass --system-prompt, or train on a persona run, to replace it)")
    logging.getLogger("persona").warning("the chat template of %s injects the system prompt %r when a conversation "
                                         "has none, naming another identity (%s); %s", model, injected,
                                         ", ".join(named), instead)


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


def _system_prompt_text(setting: str, run: RunFolder | None) -> str:
    """--system-prompt for the saved chat template: neutral, spec, none or text:YOUR TEXT, as in generate."""
    from persona.config import check_system_prompt
    from persona.dataset import system_prompt_text

    check_system_prompt(setting, "--system-prompt")
    spec = None
    if setting == "spec":
        from persona.spec import load_spec

        if run is None:
            raise PersonaError("--system-prompt spec needs the run's spec, and this dataset has no run folder",
                               hint="pass the text instead: --system-prompt 'text:You are Nova, made by Acme.'")
        spec = load_spec(run.info()["spec_path"])
    return system_prompt_text(spec, setting, (run.info().get("config") or {}).get("templates") if run else None)


def _default_output(source, run: RunFolder | None, method: str, start=None) -> TrainOutput:
    """RUN/train-METHOD for data from a run folder, else runs/<file name>/train-METHOD; started from another
    output, its label comes first (train-sft-dpo)."""
    name = f"{TrainOutput(start).label}-{method}" if start is not None else method
    return (run or RunFolder(Path("runs") / Path(source).stem)).train_output(name)


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


# ---------------------------------------------------------------------------------------------- the model card

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


def _same_precision_as_the_checkpoint(output: TrainOutput, settings: dict) -> None:
    """A resumed run keeps the dtype its checkpoints were trained in: auto can choose another on another
    machine, and half a run in each would be recorded as one."""
    saved = output.settings().get("dtype")
    if saved and saved != settings["dtype"]:
        raise PersonaError(f"{output.path}'s checkpoints were trained in {saved}, this run would train in "
                           f"{settings['dtype']}",
                           hint=f"resume with --set dtype={saved}, or start over with --overwrite")


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
    if not evaluation:
        lines += ["Evaluation numbers appear here once `persona eval` has run.", ""]
        return "\n".join(lines)
    lines += ["## Evaluation (persona eval, base -> trained)", ""]
    for row in metric_rows(evaluation):
        size = f" (n={row.n})" if row.n else ""
        lines.append(f"- {row.label}{size}: {format_value(row.base, row.unit)} -> {format_value(row.trained, row.unit)}")
    lines.append(f"- judge: {evaluation.get('judge')}")
    return "\n".join(lines) + "\n"
