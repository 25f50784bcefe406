"""Compute precision: which dtype persona computes in, decided in one place for every stage.

    compute_dtype("cpu")                 # "bfloat16" on a CPU with AMX (flag amx_bf16), else "float32"
    compute_dtype("cuda")                # "bfloat16" where the GPU supports it, else "float32"
    compute_dtype("cpu", "fp32")         # a `dtype` setting overrides the choice: "float32"
    normalize_dtype("bf61")              # PersonaError: unknown dtype 'bf61' (hint: did you mean 'bf16'?)

Generation (the hf backend, eval's answers, replay and plain rejected answers) runs in this dtype, and training
autocasts to it (TRL's `bf16=True`; the LoRA weights and optimizer state stay fp32). Log-likelihood scoring
(perplexity, multiple choice, the offline judge) runs in it too: bf16 moved those numbers by far less than their
noise (bench/precision.py on the embedded model, 2-core VM: perplexity +0.08% against a standard error of 6.4%
on 1,711 tokens, multiple choice 47.5% both on 40 questions, the offline judge's likelihood ratio by 0.006 on
average against a spread of 0.24 across 64 responses, no verdict flipped). A reward model's scores stay fp32:
its centre is calibrated in fp32 when it is trained, and bf16 was not measured against it.

Why AMX and not AVX512-BF16 alone: on a CPU whose flags show `avx512_bf16` but no `amx_bf16` (this project's
2-core development VM, Xeon model 207 under KVM), bf16 was slower than fp32, measured side by side with torch
2.13.0+cpu and 2 threads: 2048x2048 matmul 0.55x (167 vs 304 GFLOP/s), the hf backend 0.77x (244 vs 316
tokens/s). The AMX tiles are what make bf16 fast on CPUs (the issue measured 6.6x matmul, 2.07x generation on
an AMX machine). The CPU's flags are read from /proc/cpuinfo, not assumed; PERSONA_CPU_FLAGS (space- or
comma-separated, may be empty) replaces them, e.g. to simulate a CPU without the flags.
"""

from __future__ import annotations

import difflib
import logging
import os

from persona.errors import PersonaError

log = logging.getLogger("persona")

# what a `dtype` setting may say -> the torch dtype's name; "auto" (or nothing) lets compute_dtype choose
DTYPES = {"auto": None, "bf16": "bfloat16", "bfloat16": "bfloat16", "fp32": "float32", "float32": "float32",
          "float": "float32", "fp16": "float16", "float16": "float16", "half": "float16"}
CPU_FLAGS_ENV = "PERSONA_CPU_FLAGS"
FAST_BF16_FLAG = "amx_bf16"  # AMX tiles: bf16 matmuls several times faster than fp32
BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # bf16 instructions at all (without them it is emulated)
# measured on a CPU with avx512_bf16 and no AMX (see the module docstring)
AVX512_ONLY_COST = "bf16 ran at 0.55x fp32 for a matmul and 0.77x for generation on such a CPU"
_warned: set[str] = set()  # warnings already given in this process


def normalize_dtype(value, field: str = "dtype") -> str | None:
    """The torch dtype name a setting means ("bf16" -> "bfloat16"), None for "auto" or no setting."""
    if value is None:
        return None
    text = str(getattr(value, "__name__", value)).strip().lower().removeprefix("torch.")
    if text in DTYPES:
        return DTYPES[text]
    close = difflib.get_close_matches(text, list(DTYPES), n=1)
    raise PersonaError(f"unknown {field} '{value}'",
                       hint=(f"did you mean '{close[0]}'? " if close else "") + f"{field}: auto, bf16, fp32 or fp16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags, from /proc/cpuinfo (or PERSONA_CPU_FLAGS); empty where they cannot be read."""
    override = os.environ.get(CPU_FLAGS_ENV)
    if override is not None:
        return set(override.replace(",", " ").split())
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def _flags_source() -> str:
    return CPU_FLAGS_ENV if os.environ.get(CPU_FLAGS_ENV) is not None else "/proc/cpuinfo"


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def compute_dtype(device: str | None = None, requested=None) -> str:
    """The dtype to compute in on `device` ("cpu", "cuda", "cuda:1"; None: the default device): `requested`
    when given (checked against the device), else bf16 where the hardware makes it fast, else fp32."""
    device = str(device or default_device())
    name = normalize_dtype(requested)
    if device.startswith("cuda"):
        import torch

        supported = torch.cuda.is_bf16_supported()
        if name is None:
            return "bfloat16" if supported else "float32"
        if name == "bfloat16" and not supported:
            raise PersonaError("dtype bfloat16: this GPU does not support bf16",
                               hint="use dtype fp16 or fp32 (or auto)")
        return name
    if device != "cpu":
        return name or "float32"
    flags = cpu_flags()
    if name is None:
        return "bfloat16" if FAST_BF16_FLAG in flags else "float32"
    if name == "float16":
        raise PersonaError("dtype float16 on CPU: persona computes in bf16 or fp32 there",
                           hint="use dtype bf16 (on a CPU with AMX) or fp32, or auto")
    if name == "bfloat16" and not any(f in flags for f in BF16_FLAGS):
        raise PersonaError("dtype bfloat16: this CPU has no bf16 instructions (neither amx_bf16 nor avx512_bf16 "
                           f"in {_flags_source()}), so bf16 would be emulated, slower than fp32",
                           hint="use dtype fp32, or auto (fp32 on this CPU)")
    if name == "bfloat16" and FAST_BF16_FLAG not in flags and "avx512_only" not in _warned:
        _warned.add("avx512_only")  # once per process: every stage asks, the cost is the same
        log.warning("dtype bfloat16 on a CPU with avx512_bf16 but no AMX: %s (auto picks fp32 here)",
                    AVX512_ONLY_COST)
    return name


def key_parts(dtype: str) -> tuple[str, ...]:
    """What a cache key adds for work done in `dtype`: nothing for fp32, so the keys made before persona had a
    dtype setting still find their records; the dtype's name otherwise, so bf16 work is kept apart."""
    return () if dtype == "float32" else (dtype,)


def scoring_dtype(device: str | None = None, requested=None) -> str:
    """The dtype log-likelihoods (perplexity, multiple choice, the offline judge) are scored in: the compute
    dtype, since bf16 moved them by far less than their noise (see the module docstring). One function so that
    the decision stays in one place should a larger model need fp32 scores."""
    return compute_dtype(device, requested)


def describe(device: str, dtype: str) -> str:
    """Why `dtype` on `device`, in a few words (the dry run and progress lines show it)."""
    if str(device).startswith("cuda"):
        return f"{dtype} on {device}"
    flags = cpu_flags()
    if FAST_BF16_FLAG in flags:
        have = "AMX"
    elif "avx512_bf16" in flags:
        have = "avx512_bf16 without AMX"
    else:
        have = "no bf16 instructions"
    return f"{dtype} on cpu ({have})"


def torch_dtype(name: str):
    """torch.float32 for "float32": the one place a dtype's name becomes torch's."""
    import torch

    return getattr(torch, name)
