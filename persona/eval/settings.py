"""`persona eval`'s settings (EvalSettings, a job file's `eval:`), each with its command-line option."""

from __future__ import annotations

from dataclasses import dataclass

from persona.backends import backend_options_setting, batch_size_setting
from persona.options import setting
from persona.precision import DTYPES


@dataclass
class EvalSettings:
    """Every setting of `persona eval` (and a job file's `eval:`), each with its command-line option."""

    max_tokens: int = setting(64, "Longest answer, in tokens.", min=1)
    batch_size: int | None = batch_size_setting()
    judge: str = setting("rules", "rules (instant), offline, llm or reward:PATH.")
    limit: int | None = setting(None, "Quick runs: at most this many held-out probe prompts, questions per context, "
                                "attack and leak set, and retention windows and questions.", min=1, shown="all")
    repetition_penalty: float = setting(1.1, "Repetition penalty of both models' answers.", min=1, cli=False)
    dtype: str | None = setting(None, "auto, bf16 or fp32 for answering and scoring.", choices=tuple(DTYPES),
                                shown="auto: bf16 on a CPU with AMX or a GPU that has it, else fp32")
    baseline: str = setting("base", "What the trained model is compared with: base (the base model as it comes), "
                            "prompt (the base model given the spec's deployment prompt: does fine-tuning beat "
                            "prompting?) or both (three columns: base | base + prompt | trained).",
                            choices=("base", "prompt", "both"))
    backend: str = setting("hf", "Who generates the answers: hf (the models loaded for the scores), vllm, or openai "
                           "against a server that loads local folders (an adapter is exported merged into the "
                           "eval folder).", "-b")
    backend_options: dict = backend_options_setting("e.g. -o base_url=http://localhost:8000/v1")

    def __post_init__(self):
        if self.dtype is not None:
            from persona.precision import normalize_dtype

            self.dtype = normalize_dtype(self.dtype)  # auto: None, persona.precision chooses

    def precision(self) -> dict:
        """{device, generation, scoring}: where and in which dtypes both models answer and are scored."""
        from persona.precision import compute_dtype, default_device, scoring_dtype

        device = default_device()
        return {"device": device, "generation": compute_dtype(device, self.dtype),
                "scoring": scoring_dtype(device, self.dtype)}


BASELINES = ("base", "prompt", "both")  # EvalSettings.baseline
