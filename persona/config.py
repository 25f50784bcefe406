"""Run settings for `persona generate`: defaults < a small YAML run config < command-line flags.

    # run.yaml
    backend: openai
    model: gpt-4o-mini
    base_url: https://api.example.com/v1
    api_key_env: MY_API_KEY          # the variable's name, never the key
    concurrency: 64
    k: 2                             # conforming and violating responses per prompt
    backend_options: {timeout: 120}

    config = load_run_config("run.yaml", overrides={"k": 4})

Unknown keys get "did you mean", wrong types the file:line:col of the value, like identity specs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from persona.errors import SpecError
from persona.validation import schema_problems
from persona.yaml_source import read_yaml


@dataclass(frozen=True)
class RunConfig:
    backend: str = "hf"
    model: str | None = None  # hf: default model; openai: required
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int | None = None  # openai: requests in flight (default 32)
    batch_size: int | None = None  # hf: sequences per batch (default 8)
    tensor_parallel_size: int | None = None  # vllm
    backend_options: dict = field(default_factory=dict)  # anything else the backend accepts
    k: int = 2  # conforming and violating responses per prompt
    prompts_per_target: int = 3  # prompts synthesized per trait, style rule, constraint and ethics item
    synthesize: bool = True
    eval_fraction: float = 0.2  # share of prompts held out for evaluation
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 192
    seed: int = 0
    limit: int | None = None  # at most this many prompts (quick runs)
    out: str | None = None  # default runs/<identity-name>
    templates: str | None = None

    def backend_kwargs(self) -> dict:
        """Options for load_backend(); which ones a backend takes is up to it."""
        named = {"hf": ("model", "batch_size"), "openai": ("model", "base_url", "api_key_env", "concurrency"),
                 "vllm": ("model", "tensor_parallel_size"), "fake": ("model",)}
        chosen = {k: getattr(self, k) for k in named.get(self.backend, ("model",)) if getattr(self, k) is not None}
        return {**chosen, **self.backend_options}


_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean", dict: "object"}


def _schema() -> dict:
    props = {}
    for f in fields(RunConfig):
        annotation = str(f.type)
        kind = next((name for py, name in _TYPES.items() if py.__name__ in annotation.split(" | ")[0]), "string")
        types = [kind, "null"] if "None" in annotation else [kind]
        props[f.name] = {"type": types if len(types) > 1 else kind}
        if kind in ("integer", "number") and f.name not in ("seed",):
            props[f.name]["minimum"] = 0
    props["eval_fraction"]["maximum"] = 0.9
    for positive in ("k", "max_tokens"):
        props[positive]["minimum"] = 1
    return {"type": "object", "additionalProperties": False, "properties": props}


def load_run_config(path: str | Path | None = None, overrides: dict | None = None) -> RunConfig:
    config = RunConfig()
    if path is not None:
        doc = read_yaml(Path(path), str(path))
        if doc.data is None:
            doc.data = {}
        problems = schema_problems(doc, _schema())
        if problems:
            raise SpecError(problems)
        config = replace(config, **doc.data)
    return replace(config, **{k: v for k, v in (overrides or {}).items() if v is not None})
