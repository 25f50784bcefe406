"""persona: turn a written identity into a model that holds it.

The pipeline, one module per stage:
    spec (persona.spec) -> prompts -> responses -> judgements -> dataset -> train -> eval -> report

The functions behind the CLI, for notebooks and scripts (each imports its heavy dependencies on first use):

    import persona

    spec = persona.load_spec("identities/brand.yaml")              # validated; SpecError lists every problem
    summary = persona.generate(spec, persona.RunConfig(out="runs/brand", limit=20))  # prompts, responses,
    #                                                                 judgements (offline judge) and datasets
    persona.judge_run("runs/brand", "rules")                        # judge again with another judge
    persona.build_run("runs/brand", persona.BuildSettings(margin=3))  # rebuild the datasets
    result = persona.train_model("runs/brand", "sft")               # TRL + LoRA -> runs/brand/train-sft
    recipe = persona.train_recipe("runs/brand")                     # SFT, then an on-policy DPO round (recipe.model)
    rounds = persona.refine_rounds(recipe.sft_dir, persona.RefineSettings(method="ipo"))  # more rounds, any method
    metrics = persona.evaluate(result.output_dir, "identities/brand.yaml")  # base vs trained
    persona.write_report("runs/brand")                              # runs/brand/report.html

(The stage modules persona.train, persona.report, ... keep their own names; the functions are named apart.)

Every function raises `persona.PersonaError` (with `.message` and `.hint`) for bad input.
"""

from __future__ import annotations

__version__ = "0.1.0"

# name -> (module, attribute): imported on first use, so `import persona` stays fast and light
_API = {
    "load_spec": ("persona.spec", "load_spec"),
    "Spec": ("persona.spec", "Spec"),
    "RunConfig": ("persona.config", "RunConfig"),
    "generate": ("persona.pipeline", "generate"),
    "judge_run": ("persona.pipeline", "judge_run"),
    "BuildSettings": ("persona.config", "BuildSettings"),
    "build_run": ("persona.pipeline", "build_run"),
    "train_model": ("persona.train", "train"),
    "train_recipe": ("persona.recipe", "train_recipe"),
    "RefineSettings": ("persona.refine", "RefineSettings"),
    "refine_rounds": ("persona.refine", "refine"),
    "evaluate": ("persona.eval", "evaluate"),
    "EvalSettings": ("persona.eval", "EvalSettings"),
    "write_report": ("persona.report", "write_report"),
    "PersonaError": ("persona.errors", "PersonaError"),
    "SpecError": ("persona.errors", "SpecError"),
}
__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'persona' has no attribute {name!r}")
    import importlib

    module, attribute = _API[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
