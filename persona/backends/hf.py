"""The `hf` backend: a local transformers model, batched (left padding, KV cache), CPU or GPU.

    backend = HFBackend()                                  # the embedded default: SmolLM2-135M-Instruct
    backend = HFBackend(model="path/to/model-folder")      # any local causal-LM folder
    backend = HFBackend(model="path/to/model.Q4_K_M.gguf") # a GGUF file, converted once into the cache

Which model a name means, and the one-time conversion of the embedded GGUF model, live in persona.models.

Batching: requests with equal sampling parameters are sorted by length and generated `batch_size`
sequences at a time (a request with n=4 takes 4 of them). By default (`batch_size` None) the batch is sized
for the machine and the request mix: as many sequences as a quarter of the free memory holds for their KV
cache at the group's longest prompt + max_tokens, at most 64 (on 2 CPU cores tokens/s still rises up to 64
short sequences: bench/hf_batching.py); on CPU also at most CPU_TOKEN_BUDGET tokens of prompt + answer
per batch, because with long prompts each step's cost is reading every row's KV cache, which a bigger
batch does not share (64 rows of a 382-token prompt + 64 new tokens fit; 650-token ones stop at 38).
Prompts longer than the context minus `max_tokens` keep their last tokens, with a warning.

Precision: the model computes in persona.precision's dtype for its device (bf16 on a CPU with AMX or a GPU
that supports it, else fp32) unless `dtype` says otherwise; `backend.dtype` says which.

Decoding is persona's own loop (`_decode`), not transformers' `generate`: rows whose answer has ended leave
the batch (`generate` runs every row until the longest answer ends), and sampling draws among the 50 most
likely tokens (`generate` samples over the whole vocabulary after its top-k warper has masked it). Greedy
answers equal `generate`'s one prompt at a time (tested); bench/hf_decode.py compares the two.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Iterator, Sequence

from persona.backends import Completion, Request, Result, SamplingParams
from persona.errors import PersonaError
from persona.models import DEFAULT_MODEL, cache_kwarg, cache_of, forward_parameters, resolve_model
from persona.precision import compute_dtype, default_device, torch_dtype

log = logging.getLogger("persona")

MIN_SHARED_PREFIX = 32  # tokens; shorter shared prefixes are not worth a separate forward pass
MAX_AUTO_BATCH = 64  # sequences
MEMORY_SHARE = 0.25  # of the free memory, for one batch's KV cache and activations
CPU_TOKEN_BUDGET = 32768  # sequences x (prompt + max_tokens) per batch on CPU (bench/hf_batching.py)


def free_memory(device: str) -> int:
    """Bytes free for a batch: the GPU's free memory, or the machine's available memory (/proc/meminfo)."""
    import torch

    if device.startswith("cuda"):
        return int(torch.cuda.mem_get_info()[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30  # unknown: assume 4 GiB


def bytes_per_token(config, element_size: int) -> int:
    """Memory one sequence position costs while generating: its keys and values in every layer, plus the
    hidden activations of one layer (x4 for the MLP's width), both at the model's element size."""
    layers = getattr(config, "num_hidden_layers", 24)
    heads = getattr(config, "num_attention_heads", 16)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    hidden = getattr(config, "hidden_size", 1024)
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return element_size * (2 * layers * kv_heads * head_dim + 4 * hidden)


def auto_batch_size(config, element_size: int, sequence_tokens: int, free: int, cpu: bool = False) -> int:
    """Sequences per batch for sequences of `sequence_tokens` (prompt + max_tokens) with `free` bytes free."""
    fits = int(free * MEMORY_SHARE) // max(1, bytes_per_token(config, element_size) * sequence_tokens)
    if cpu:
        fits = min(fits, CPU_TOKEN_BUDGET // max(1, sequence_tokens))
    return max(1, min(MAX_AUTO_BATCH, fits))


def _shared_prefix(rows: list[list[int]]) -> int:
    """Length of the token prefix all rows share, leaving at least one token of each row to run."""
    limit = min(len(r) for r in rows) - 1
    n = 0
    while n < limit and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return n


class HFBackend:
    name = "hf"
    local = True  # the model runs in this process
    default_model = DEFAULT_MODEL

    def __init__(self, model: str | None = None, batch_size: int | None = None, device: str | None = None,
                 dtype: str | None = None, max_context: int | None = None, repetition_penalty: float = 1.1):
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # persona shows its own progress
        source, self.model = resolve_model(model)
        self.batch_size = int(batch_size) if batch_size else None  # None: sized per request group
        self.repetition_penalty = float(repetition_penalty)  # small models loop without it
        self.device = device or default_device()
        self.dtype = compute_dtype(self.device, dtype)  # bf16 where the hardware makes it fast (persona.precision)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype(self.dtype)).to(self.device).eval()
        except OSError as e:
            raise PersonaError(f"cannot load model '{self.model}': {str(e).splitlines()[0]}",
                               hint="give a local model folder or .gguf file; hub ids need network access")
        if not self.tokenizer.chat_template:
            raise PersonaError(f"the tokenizer of '{self.model}' has no chat template",
                               hint="use an instruct/chat model, or add a chat_template to its tokenizer_config.json")
        self._prepare(max_context)

    def _prepare(self, max_context: int | None = None) -> None:
        self.tokenizer.padding_side = "left"  # decoder-only batching: pad on the left, generate on the right
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_context = int(max_context or getattr(self.lm.config, "max_position_embeddings", 2048))
        self._cache_kwarg = cache_kwarg(self.lm)  # read once, not per batch
        self._logits_to_keep = "logits_to_keep" in forward_parameters(self.lm)

    @classmethod
    def from_loaded(cls, lm, tokenizer, name: str, batch_size: int | None = None,
                    repetition_penalty: float = 1.1, dtype: str | None = None) -> "HFBackend":
        """A backend around a model already in memory (persona eval: a base model, a merged adapter). The model
        is cast in place to the compute dtype (`dtype`, else persona.precision's choice for its device)."""
        self = cls.__new__(cls)
        self.device = str(next(lm.parameters()).device)
        self.dtype = compute_dtype(self.device, dtype)
        self.lm, self.tokenizer, self.model = lm.to(torch_dtype(self.dtype)).eval(), tokenizer, name
        self.batch_size = int(batch_size) if batch_size else None
        self.repetition_penalty = float(repetition_penalty)
        self._prepare()
        return self

    def close(self) -> None:
        self.lm = None

    def _with_prefix_cache(self, rows: list[list[int]], prefix: int):
        """The shared system prompt is run once and its KV cache copied to every row; each row is then
        prefix + padding + its own tail, with the padding masked out. Greedy output is identical to
        padding on the left (tested); it saves the prefill of the prefix for all rows but one."""
        import torch

        out = self.lm(torch.tensor([rows[0][:prefix]], device=self.device), use_cache=True)
        cache = cache_of(out)
        cache.batch_repeat_interleave(len(rows))
        longest = max(len(r) for r in rows) - prefix
        pad = self.tokenizer.pad_token_id
        ids = [r[:prefix] + [pad] * (longest - (len(r) - prefix)) + r[prefix:] for r in rows]
        mask = [[1] * prefix + [0] * (longest - (len(r) - prefix)) + [1] * (len(r) - prefix) for r in rows]
        return ({"input_ids": torch.tensor(ids, device=self.device),
                 "attention_mask": torch.tensor(mask, device=self.device)}, cache)

    def complete(self, requests: Sequence[Request]) -> Iterator[Result]:
        groups: dict[SamplingParams, list[tuple[Request, list[int]]]] = {}
        for request in requests:
            groups.setdefault(request.params, []).append((request, self._encode(request)))
        for params, items in groups.items():
            items.sort(key=lambda item: len(item[1]))
            per_batch = max(1, self.sequences_per_batch(len(items[-1][1]) + params.max_tokens) // params.n)
            for start in range(0, len(items), per_batch):
                yield from self._generate(items[start:start + per_batch], params)

    def sequences_per_batch(self, sequence_tokens: int) -> int:
        """`batch_size` when set, else what the free memory holds for sequences this long (at most 64)."""
        if self.batch_size:
            return self.batch_size
        element = next(self.lm.parameters()).element_size()
        return auto_batch_size(self.lm.config, element, sequence_tokens, free_memory(self.device),
                               cpu=self.device == "cpu")

    def _encode(self, request: Request) -> list[int]:
        text = self.tokenizer.apply_chat_template(list(request.messages), add_generation_prompt=True, tokenize=False)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        room = self.max_context - request.params.max_tokens
        if room <= 0:
            raise PersonaError(f"max_tokens {request.params.max_tokens} leaves no room in the model's context of "
                               f"{self.max_context} tokens", hint="lower --max-tokens")
        if len(ids) > room:
            log.warning("prompt of request %s is %d tokens; the context holds %d with max_tokens %d: "
                        "kept its last %d tokens", request.key, len(ids), self.max_context,
                        request.params.max_tokens, room)
            ids = ids[-room:]
        return ids

    def _generate(self, items: list[tuple[Request, list[int]]], params: SamplingParams) -> Iterator[Result]:
        import torch

        # One seed per batch, derived from its requests, so a re-run of the same batch is reproducible.
        seed = int(hashlib.sha256("|".join(r.key for r, _ in items).encode()).hexdigest()[:8], 16)
        torch.manual_seed(seed + (params.seed or 0))
        rows = [ids for _, ids in items for _ in range(params.n)]  # n samples of a prompt: n rows
        started = time.perf_counter()
        with torch.inference_mode():
            prefix = _shared_prefix(rows)
            cache = None
            if len(rows) > 1 and prefix >= MIN_SHARED_PREFIX:
                batch, cache = self._with_prefix_cache(rows, prefix)
            else:
                prefix = 0
                batch = self.tokenizer.pad({"input_ids": rows}, padding=True, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items()}
            new_tokens = self._decode(batch["input_ids"], batch["attention_mask"], cache, prefix, params)
        latency = time.perf_counter() - started
        stop_ids = self._stop_ids()
        for i, (request, ids) in enumerate(items):
            completions = []
            for tokens in new_tokens[i * params.n:(i + 1) * params.n]:
                ended = next((j for j, t in enumerate(tokens) if t in stop_ids), None)
                tokens = tokens[:ended] if ended is not None else tokens
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                finish = "stop" if ended is not None else "length"
                for stop in params.stop:
                    if stop in text:
                        text, finish = text.split(stop, 1)[0], "stop"
                completions.append(Completion(text.strip(), len(ids), len(tokens), finish, latency))
            yield Result(request, tuple(completions))

    def _stop_ids(self) -> set[int]:
        """Tokens that end an answer: the tokenizer's end-of-sequence and padding, and the model's own."""
        ids = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        configured = getattr(getattr(self.lm, "generation_config", None), "eos_token_id", None)
        ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
        return {i for i in ids if i is not None}

    def _decode(self, input_ids, attention_mask, cache, prefix: int, params: SamplingParams) -> list[list[int]]:
        """Generate up to `params.max_tokens` new tokens for every row: a KV-cached decode loop in which rows
        that have ended leave the batch (a batch no longer runs every row to the longest answer), with
        transformers' repetition penalty (over each row's own tokens, never its padding), and sampling
        (temperature, top-k 50 and top-p, as transformers' defaults) drawn among the 50 most likely tokens
        rather than over the whole vocabulary. Returns each row's new tokens, an end token included."""
        import torch

        rows = input_ids.shape[0]
        sampling = params.temperature > 0
        stop_ids = torch.tensor(sorted(self._stop_ids()), device=self.device)
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        # each row's own tokens, for the repetition penalty: padding replaced by the row's first real token
        first = input_ids.gather(1, attention_mask.long().argmax(-1, keepdim=True))
        history = torch.where(attention_mask.bool(), input_ids, first)
        longest_stop = max((len(s) for s in params.stop), default=0)
        generated: list[list[int]] = [[] for _ in range(rows)]
        active = list(range(rows))  # batch position -> row
        done = [False] * rows
        extra = {"logits_to_keep": 1} if self._logits_to_keep else {}
        out = self.lm(input_ids=input_ids[:, prefix:], attention_mask=attention_mask,
                      position_ids=positions[:, prefix:], **{self._cache_kwarg: cache}, use_cache=True, **extra)
        cache, position = cache_of(out), positions[:, -1:]
        can_drop = hasattr(cache, "batch_select_indices")  # transformers' DynamicCache; other caches keep every row
        for step in range(params.max_tokens):
            scores = out.logits[:, -1, :].float()
            if self.repetition_penalty != 1.0:
                seen = scores.gather(1, history)
                seen = torch.where(seen < 0, seen * self.repetition_penalty, seen / self.repetition_penalty)
                scores = scores.scatter(1, history, seen)
            chosen = _sample(scores, params.temperature, params.top_p) if sampling else scores.argmax(-1)
            ended = torch.isin(chosen, stop_ids).tolist()
            for slot, (row, token) in enumerate(zip(active, chosen.tolist())):
                if done[row]:
                    continue
                generated[row].append(token)
                if ended[slot] or (longest_stop and self._hit_stop(generated[row], params.stop, longest_stop)):
                    done[row] = True
            if step + 1 == params.max_tokens or all(done[row] for row in active):
                break
            finished = sum(done[row] for row in active)
            if can_drop and finished and finished >= max(1, len(active) // 8):  # ended rows leave the batch
                keep = [slot for slot, row in enumerate(active) if not done[row]]
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                active = [active[slot] for slot in keep]
                chosen, attention_mask, history, position = (t[index] for t in (chosen, attention_mask, history,
                                                                                 position))
            history = torch.cat([history, chosen[:, None]], dim=1)
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(active), 1))], dim=1)
            position = position + 1
            out = self.lm(input_ids=chosen[:, None], attention_mask=attention_mask, position_ids=position,
                          **{self._cache_kwarg: cache}, use_cache=True)
        return generated

    def _hit_stop(self, tokens: list[int], stops: Sequence[str], longest: int) -> bool:
        """Whether the row's last tokens spell one of the stop strings (a stop string of k characters spans at
        most k tokens)."""
        tail = self.tokenizer.decode(tokens[-(longest + 1):], skip_special_tokens=True)
        return any(stop in tail for stop in stops)


TOP_K = 50  # transformers' default for sampling; persona's sampling has always drawn from these


def _sample(scores, temperature: float, top_p: float):
    """One token per row, drawn from _sampling_distribution."""
    import torch

    probs, index = _sampling_distribution(scores, temperature, top_p)
    return index.gather(1, torch.multinomial(probs, 1)).squeeze(1)


def _sampling_distribution(scores, temperature: float, top_p: float):
    """Temperature, then the TOP_K most likely tokens, then the smallest set of them whose probability reaches
    top_p (the most likely always kept): the same distribution as transformers' temperature, top-k and top-p
    warpers (tested), as (unnormalized probabilities, token ids) over TOP_K tokens per row, without sorting
    or sampling the whole vocabulary."""
    top, index = (scores / temperature).topk(min(TOP_K, scores.shape[-1]), dim=-1)
    probs = top.softmax(-1)
    if top_p < 1.0:
        before = probs.cumsum(-1) - probs  # probability of the more likely tokens
        probs = probs.masked_fill(before >= top_p, 0.0)
    return probs, index
