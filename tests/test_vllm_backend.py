"""The `vllm` backend against a stand-in `vllm` module (no GPU in CI; vllm is CUDA-only). The stand-in
mirrors the API persona uses: vllm.LLM(**options).chat(conversations, sampling_params=[...], use_tqdm=False)
-> [RequestOutput(prompt_token_ids, outputs=[CompletionOutput(text, token_ids, finish_reason)])]."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field

import pytest

from persona.backends import Request, SamplingParams, load_backend
from persona.errors import PersonaError


@dataclass
class StandInSamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    seed: int | None = None
    stop: list | None = None
    ignore_eos: bool = False


@dataclass
class CompletionOutput:
    text: str
    token_ids: list
    finish_reason: str


@dataclass
class RequestOutput:
    prompt_token_ids: list
    outputs: list = field(default_factory=list)


class StandInLLM:
    instances: list["StandInLLM"] = []

    def __init__(self, **options):
        self.options = options
        self.calls: list[tuple[list, list]] = []
        StandInLLM.instances.append(self)

    def chat(self, messages, sampling_params=None, use_tqdm=True):
        self.calls.append((messages, sampling_params))
        return [RequestOutput([1] * 7, [CompletionOutput(f" {conv[-1]['content']} #{i} ", [5] * (3 + i), "stop")
                                        for i in range(sp.n)])
                for conv, sp in zip(messages, sampling_params)]


@pytest.fixture
def vllm(monkeypatch, tiny_model_dir):
    module = types.ModuleType("vllm")
    module.LLM = StandInLLM
    module.SamplingParams = StandInSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    StandInLLM.instances.clear()
    return module


def requests(count, **params):
    return [Request(f"r{i}", ({"role": "system", "content": "Be Aster."}, {"role": "user", "content": f"q{i}"}),
                    SamplingParams(**params)) for i in range(count)]


def test_one_chat_call_for_the_whole_batch(vllm, tiny_model_dir):
    backend = load_backend("vllm", model=str(tiny_model_dir), tensor_parallel_size=2)
    results = list(backend.complete(requests(5, n=2, temperature=0.7, max_tokens=33, seed=4, stop=("END",))))
    [llm] = StandInLLM.instances
    assert llm.options["tensor_parallel_size"] == 2 and llm.options["model"] == str(tiny_model_dir)
    assert llm.options["enable_prefix_caching"] is True and llm.options["enforce_eager"] is False
    assert len(llm.calls) == 1  # the whole batch in one call: vLLM's scheduler does the batching
    conversations, sampling = llm.calls[0]
    assert [c[-1]["content"] for c in conversations] == ["q0", "q1", "q2", "q3", "q4"]
    assert not any(sp.ignore_eos for sp in sampling)  # answers end where the model ends them
    assert all(sp.n == 2 and sp.max_tokens == 33 and sp.temperature == 0.7 and sp.stop == ["END"] for sp in sampling)
    assert len({sp.seed for sp in sampling}) == 5  # distinct, reproducible seed per request
    assert [r.request.key for r in results] == ["r0", "r1", "r2", "r3", "r4"]
    first = results[0].completions
    assert [c.text for c in first] == ["q0 #0", "q0 #1"]
    assert (first[1].prompt_tokens, first[1].completion_tokens, first[1].finish_reason) == (7, 4, "stop")


def test_chunks_bound_lost_work(vllm, tiny_model_dir):
    backend = load_backend("vllm", model=str(tiny_model_dir), chunk_size=2)
    assert len(list(backend.complete(requests(5)))) == 5
    assert [len(c[0]) for c in StandInLLM.instances[0].calls] == [2, 2, 1]


def test_missing_vllm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(PersonaError) as e:
        load_backend("vllm")
    assert e.value.message == "backend 'vllm' needs the package 'vllm', which is not installed"
    assert e.value.hint == "pip install 'persona-tune[vllm]' in its own environment: make vllm-env"


def test_unknown_backend_and_option():
    with pytest.raises(PersonaError) as e:
        load_backend("vllmm")
    assert e.value.hint == "did you mean 'vllm'? backends: hf, openai, vllm"
    with pytest.raises(PersonaError) as e:
        load_backend("fake", colour="red")
    assert e.value.message == "backend 'fake' has no option 'colour'"
