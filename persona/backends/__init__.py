"""Generation backends: chat messages in, completions out. One small interface, one file per backend.

    from persona.backends import Request, SamplingParams, load_backend
    backend = load_backend("hf")                               # the embedded default model, on CPU
    backend = load_backend("openai", model="gpt-4o-mini", base_url="http://localhost:8000/v1")
    for result in backend.complete([Request("r1", ({"role": "user", "content": "Hi"},), SamplingParams(n=2))]):
        print(result.request.key, [c.text for c in result.completions])

`complete` yields each request's result as soon as it is done, in any order, so the caller can save it
at once: a crash or Ctrl-C loses only the requests still in flight. A request that fails for good
(after the backend's retries) raises PersonaError; results already yielded stay valid.

Backends are imported only when used (`persona --help` never imports torch or vllm). To add one, write
`persona/backends/NAME.py` with a class that has `name`, `model`, `complete()` and `close()`, and add it
to BACKENDS.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterator, Protocol, Sequence

from persona.options import setting


# name -> "module:Class"; imported only when that backend is used.
BACKENDS: dict[str, str] = {
    "hf": "persona.backends.hf:HFBackend",
    "openai": "persona.backends.openai_api:OpenAIBackend",
    "vllm": "persona.backends.vllm_local:VLLMBackend",
    "ray": "persona.backends.ray_pool:RayBackend",  # another backend over a Ray cluster (--ray ADDRESS)
    "fake": "persona.backends.fake:FakeBackend",  # scripted, for tests only
}
# the pip extra that provides each backend's dependencies
EXTRAS = {"hf": "train", "openai": "openai", "vllm": "vllm", "ray": "ray"}


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int | None = None
    stop: tuple[str, ...] = ()
    json_schema: str | None = None  # ask for JSON matching this schema where the backend supports it

    def to_dict(self) -> dict:
        data = {**asdict(self), "stop": list(self.stop)}
        if self.json_schema is None:
            del data["json_schema"]  # keeps the keys of records made before this field existed
        return data


@dataclass(frozen=True)
class Request:
    key: str  # the caller's id for this request (records are keyed by it)
    messages: tuple[dict, ...]  # [{"role": "system" | "user" | "assistant", "content": str}, ...]
    params: SamplingParams = field(default_factory=SamplingParams)


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"
    latency_s: float  # wall time of the call that produced it (shared by a batch)


@dataclass(frozen=True)
class Result:
    request: Request
    completions: tuple[Completion, ...]  # request.params.n of them


class Backend(Protocol):
    name: str
    model: str  # what records name as their model (a hub id, a folder, a served model name)

    def complete(self, requests: Sequence[Request]) -> Iterator[Result]: ...

    def close(self) -> None: ...


def backend_class(name: str):
    """The class of backend `name`, imported now (its module imports its heavy packages only when it runs)."""
    from persona.registry import check_name, load_class

    check_name(BACKENDS, name, "backend", hidden=("fake", "ray"))
    return load_class(BACKENDS, name, "backend", _install(name))


def options_of(name: str) -> list[str]:
    """The options backend `name` takes: its constructor's parameters, the one place each backend declares them."""
    import inspect

    return [p for p in inspect.signature(backend_class(name).__init__).parameters if p != "self"]


def model_name(backend: str, model: str | None) -> str | None:
    """The model `backend` runs for --model `model` (None: its default), without loading anything."""
    return model or backend_class(backend).default_model


def place_backend(name: str, options: dict, ray: str | None = None, replicas: int | None = None) -> Backend:
    """Backend `name` with `options`, here, or replicated over the Ray cluster at `ray` (persona.backends.ray_pool)."""
    if ray:
        return load_backend("ray", backend=name, options=options, address=ray, replicas=replicas)
    return load_backend(name, **options)


def load_backend(name: str, **options) -> Backend:
    """Instantiate backend `name` with `options` (None values are left to the backend's defaults)."""
    from persona.registry import construct

    return construct(BACKENDS, name, "backend", options, hidden=("fake", "ray"),  # heavy packages load in the module
                     install=_install(name))


def _install(name: str) -> str:
    return (f"pip install 'persona-tune[{EXTRAS.get(name, 'dev')}]'"
            + (" in its own environment: make vllm-env" if name == "vllm" else ""))


# The settings every command that runs a backend has (generate, eval, refine), declared here once.
def batch_size_setting():
    return setting(None, "hf: sequences per generation batch.", min=1,
                   shown="what a quarter of the free memory holds, at most 64")


def backend_options_setting(example: str):
    from dataclasses import MISSING

    return setting(MISSING, f"Another option of the backend, KEY=VALUE (repeatable), {example}.", "-o", factory=dict,
                   flag="--backend-option", example=example, word="KEY")


def ray_setting(what: str, note: str = ""):
    return setting(None, f"{what} on a Ray cluster at HOST:PORT (`ray start --head`): the backend replicated on its "
                   f"workers{note}, results saved here as they arrive.")


def ray_replicas_setting():
    return setting(None, "With --ray: copies of the backend.", min=1, shown="one per CPU of the cluster")

