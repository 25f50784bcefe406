"""`persona train`: fine-tune a model on persona's datasets (or your own, in TRL's formats) with TRL and PEFT.

    result = train("runs/brand")                                  # SFT on the run's datasets/sft, LoRA, the run's target model
    result = train("runs/brand", method="dpo", start="runs/brand/train-sft")
    result = train("runs/brand", method="ipo", overrides={"beta": 0.5})
    result = train("thumbs.jsonl", method="kto", model="path/to/model")   # prompt/completion/label rows

Homes: the methods table and settings in persona.methods, the training data and its row checks in
persona.train_data, the model card in persona.cards; this module trains. Methods are rows of METHODS, each
TRL's own trainer and loss; adding one is a row (plus, at most, one function for what its data or output need):
  sft     SFTTrainer on the run's SFT rows (demonstrations, accepted answers, replay), loss on the answer only;
          the supervised start preference training needs at this scale (see docs/experiment.md)
  dpo     DPOTrainer, loss_type ["sigmoid"], beta 0.1; `sft_weight: w` adds the SFT term (["sigmoid", "sft"],
          loss_weights [1, w]) to keep chosen log-probs from collapsing; `loss_type` takes any TRL DPO loss
  ipo     DPOTrainer, loss_type ["ipo"], beta is IPO's tau (the loss starts near (1/(2*beta))^2: 25 at 0.1)
  kto     KTOTrainer, desirable/undesirable weights from the dataset card; paired rows are unpaired first
  reward  RewardTrainer on the pairs: a reward model usable as `--judge reward:PATH`
  grpo    GRPOTrainer on prompt rows with `reward_funcs`, beta 0.04 (KL to the start); persona refine runs it
  rloo    RLOOTrainer, the same way, beta 0.05

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
Runs under torchrun or `accelerate launch` unchanged; only the main process writes and reports (is_main_process).

The output folder (persona.run.TrainOutput): the adapter (or full model), tokenizer and chat template, the
resolved settings, every logged step, a model card (`model_card`, rewritten by `persona eval` with its
numbers), and with `merge=True` a merged model.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Callable

from persona.errors import PersonaError
from persona.cards import write_model_card
from persona.methods import LORA_FIELDS, METHODS, method_named, resolve_settings, trl_class, trl_config
from persona.options import setting
from persona.run import RunFolder, TrainOutput
from persona.train_data import check_columns, content_fingerprint, find_dataset


@dataclass(frozen=True)
class TrainSettings:
    """Every setting of `persona train` and of a job file's train step (the keys of a step: those with a file
    name), each with its command-line option (persona.options)."""

    method: str | None = setting(None, "One of: " + ", ".join(METHODS) + ".", choices=tuple(METHODS),
                                 shown="the recipe - on a run folder SFT, then one on-policy DPO round from it "
                                       "(persona refine's defaults); on a dataset SFT")
    model: str | None = setting(None, "Base model folder or .gguf.", "-m",
                                shown="the run's --target-model, else embedded SmolLM2-135M-Instruct")
    config: str | None = setting(None, "Flat YAML of TRL / PEFT settings.", "-c", file=False)
    overrides: dict = setting(MISSING, "One setting NAME=VALUE (repeatable), e.g. --set beta=0.5.", factory=dict,
                              key="set", example="e.g. --set learning_rate=5e-5")
    output_dir: str | None = setting(None, "Where to write.", shown="RUN_DIR/train-METHOD")
    overwrite: bool = setting(False, "Replace a finished run in the output folder.", file=False)
    resume: bool = setting(False, "Continue from the last checkpoint in the output folder.", file=False)
    merge: bool = setting(False, "Also save the base model with the LoRA adapter merged in.")
    report_to: str | None = setting(None, "Passed to TRL: none, tensorboard, trackio, wandb (when installed).",
                                    file=False)
    start: str | None = setting(None, "Start from a trained output (e.g. runs/aster/train-sft): its weights train, "
                                "and are DPO/IPO/KTO's reference. In a job file also an earlier step's method "
                                "(from: sft).", key="from")
    system_prompt: str | None = setting(None, "Default system prompt of the saved chat template: neutral, spec, none "
                                        "or text:YOUR TEXT.", shown="the one the dataset's rows carry")
    license: str | None = setting(None, "The model card's license, a Hugging Face Hub license id.",
                                  shown="the dataset's, from persona build --license")


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


def train(source: str | Path, method: str = "sft", model: str | None = None, config_path: str | Path | None = None,
          overrides: dict | None = None, output_dir: str | Path | None = None, overwrite: bool = False,
          resume: bool = False, merge: bool = False, on_log: Callable[[dict], None] | None = None,
          on_start: Callable[[dict, Path], None] | None = None, start: str | Path | None = None,
          system_prompt: str | None = None, license: str | None = None, reward_funcs: list | None = None,
          system_text: str | None = None) -> TrainResult:
    """Train `method` on `source` (a run folder, a dataset folder or a JSONL file). `start`: a trained output
    to start from (e.g. SFT before DPO); `system_prompt`: the default the saved chat template injects, a mode
    (neutral, spec, none, text:...; `system_text`: its text, as another output recorded it)
    [default: the one the dataset's rows carry, from its build]; `license`: the model card's license (a Hub
    license id) [default: the dataset's, from its build]; `reward_funcs`: GRPO's and RLOO's reward functions
    (TRL's `f(prompts, completions, **columns) -> list[float]`; persona refine passes its labels' own)."""
    from persona.config import check_license

    check_license(license)
    spec = method_named(method)
    if spec.dataset == "prompts" and not reward_funcs:
        raise PersonaError(f"--method {method} needs a reward function to score the model's samples",
                           hint=f"run it as a round: persona refine TRAINED --method {method} (the identity and "
                                "leak checks are its reward)")
    data, card, where, run = find_dataset(source, method)
    if start is not None:
        from persona.models import check_start

        check_start(start, model, spec.model)  # before any work: a wrong --from fails at once
    from_pairs = spec.dataset == "kto" and "train" in data and "chosen" in data["train"].column_names
    data = check_columns(data, method, where)
    if from_pairs:  # every pair gives one desirable and one undesirable row: balanced, so equal weights
        card = {**card, "kto_weights": {"desirable_weight": 1.0, "undesirable_weight": 1.0}}
    if spec.model == "reward":
        data = _asked_per_target(data, run)
    settings = resolve_settings(method, config_path, overrides, card)
    if model is None and start is None and run is not None:  # the model `persona generate --target-model` named
        model = (run.info().get("config") or {}).get("target_model")
    if system_text is None and system_prompt is not None:  # a mode (neutral, spec, none, text:...) -> its text
        system_text = _system_prompt_text(system_prompt, run)
    output = TrainOutput(output_dir) if output_dir else _default_output(source, run, method, start)
    # one training run per output folder; under torchrun / accelerate the main process holds it for all of them
    with output.lock() if is_main_process() else nullcontext():
        return _train(method, spec, data, card, where, run, settings, output, model, overwrite, resume, merge,
                      on_log, on_start, start, system_text, license, reward_funcs)


def _asked_per_target(data, run):
    """A reward model's pairs, plus each pair aimed at one target of the run's spec asked about that target
    (persona.judges.reward.with_target_rows): one model, scored per target by the judge."""
    from datasets import Dataset, DatasetDict

    from persona.judges.reward import TARGET_COLUMN, with_target_rows

    if "margin" in data["train"].column_names:  # a DPO dataset's 0-10 score gap: TRL would read it as a reward margin
        data = data.remove_columns("margin")
    columns = data["train"].column_names
    if ("rejected_target" not in columns and TARGET_COLUMN not in columns) or run is None or not run.spec_path():
        return data
    from persona.spec import load_spec

    spec = load_spec(run.spec_path())
    return DatasetDict({split: Dataset.from_list(with_target_rows(list(rows), spec)) for split, rows in data.items()})


def train_with(source: str | Path, settings: TrainSettings, on_log: Callable[[dict], None] | None = None,
               on_start: Callable[[dict, Path], None] | None = None) -> TrainResult:
    """`train` with every setting from `settings` (the CLI's, a job step's, the recipe's SFT step)."""
    overrides = {**settings.overrides, **({"report_to": settings.report_to} if settings.report_to is not None else {})}
    return train(source, settings.method or "sft", settings.model, settings.config, overrides, settings.output_dir,
                 settings.overwrite, settings.resume, settings.merge, on_log, on_start, start=settings.start,
                 system_prompt=settings.system_prompt, license=settings.license)


def is_main_process() -> bool:
    """False in the other processes of a multi-process launch (torchrun, accelerate launch, mpirun): only the
    main one locks the output folder, writes persona's files and reports; TRL's trainer saves on it alone too."""
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"))


def _train(method, spec, data, card, where, run, settings, output, model, overwrite, resume, merge, on_log, on_start,
           start, system_text, license, reward_funcs=None) -> TrainResult:
    main = is_main_process()
    if not main:
        on_log = on_start = None
    if output.metrics_file.exists() and not (overwrite or resume):
        raise PersonaError(f"{output.path} already holds a finished training run",
                           hint="pass --overwrite to replace it, or --output-dir for another folder")
    output.path.mkdir(parents=True, exist_ok=True)
    if overwrite and not resume and main:  # a new run: the old run's checkpoints must not be resumed from later
        import shutil

        for old in output.checkpoints():
            shutil.rmtree(old, ignore_errors=True)
    if resume and output.last_checkpoint() is not None:
        _same_precision_as_the_checkpoint(output, settings)
    args = trl_config(method, settings, output)
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
    # the text (the dataset's card names it system_text; cards written before the rename, system_prompt)
    system = system_text if system_text is not None else card.get("system_text", card.get("system_prompt"))
    if main:
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

    with _no_tqdm_bars():  # TRL computes precomputed reference log-probs when the trainer is made
        trainer = _make_trainer(method, lm, tokenizer, args, data, peft_config, [Record()], ref_model, reward_funcs)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    (output.write_settings if main else _nothing)({
        "method": method, "model": model_name, "base_model": model, "dataset": where,
        "run": str(run.path) if run else None, "start": str(start) if start is not None else None,
        "system_prompt": system, "base_template_default": base_default, "base_model_id": public_id,
        "license": license or (card.get("settings") or {}).get("license"),
        "data": {"kind": spec.dataset, "train_rows": data["train"].num_rows,
                 "eval_rows": data["eval"].num_rows if "eval" in data else 0,
                 "spec_hash": card.get("spec_hash"), "judge": card.get("judge")},
        "processes": args.world_size, **settings})
    started = time.perf_counter()
    checkpoint = output.last_checkpoint() if resume else None
    try:
        with _first_ctrl_c_stops_gently(stop), _fused_head_scores_answer_tokens_only(), _no_tqdm_bars():
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except torch.OutOfMemoryError:
        raise PersonaError("out of memory on the GPU",
                           hint="lower per_device_train_batch_size or max_length, keep LoRA on, or set "
                                "activation_checkpointing: true") from None
    if stop["requested"]:
        raise Interrupted(output.last_checkpoint())
    changed = sum(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters() if n in before)
    result = TrainResult(output.path, method, settings, logs, time.perf_counter() - started, changed,
                         tokens=trainer.state.num_input_tokens_seen or None)
    trainer.save_model(str(output.path))  # on the main process only (TrainingArguments.should_save)
    if not main:
        return result
    merged_whole = False
    if start is not None and settings["use_lora"]:  # an adapter over the start's merged weights: make it standalone
        public_id, merged_whole = _standalone(output, TrainOutput(start), trainer, public_id)
    if public_id and output.has_adapter():  # shareable: the adapter names its public base, not a local path
        output.name_adapter_base(public_id)
    tokenizer.chat_template = chat_template  # persona's default system prompt, not the base's identity
    tokenizer.save_pretrained(str(output.path))
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


def _nothing(*args, **kwargs) -> None:
    return None


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


@contextmanager
def _no_tqdm_bars():
    """TRL's own tqdm bar (the reference log-probs pass) would fill a log file with carriage returns; persona's
    step lines show the progress. TRL reads TQDM_DISABLE when the bar starts."""
    before = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = before


def _make_trainer(name, lm, tokenizer, args, data, peft_config, callbacks, ref_model=None, reward_funcs=None):
    method = METHODS[name]
    cls = trl_class(method.trainer)
    extra = {"reward_funcs": reward_funcs} if reward_funcs else {}
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


def _same_precision_as_the_checkpoint(output: TrainOutput, settings: dict) -> None:
    """A resumed run keeps the dtype its checkpoints were trained in: auto can choose another on another
    machine, and half a run in each would be recorded as one."""
    saved = output.settings().get("dtype")
    if saved and saved != settings["dtype"]:
        raise PersonaError(f"{output.path}'s checkpoints were trained in {saved}, this run would train in "
                           f"{settings['dtype']}",
                           hint=f"resume with --set dtype={saved}, or start over with --overwrite")


