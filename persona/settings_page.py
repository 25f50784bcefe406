"""docs/settings.md, generated from the settings dataclasses: `python -m persona.settings_page > docs/settings.md`."""

from __future__ import annotations

from persona.behaviour import TestSettings
from persona.config import BuildSettings, RunConfig
from persona.eval import EvalSettings
from persona.judges import JudgeSettings
from persona.options import settings_table
from persona.refine import RefineSettings
from persona.train import TrainSettings


def settings_doc() -> str:
    """docs/settings.md: every setting of generate (and a run config or a job file's `generate:`), the judge, build
    (`build:`), train (a job file's train steps), refine and eval (`eval:`), from their dataclass fields. Rewrite it with `python -m persona.settings_page`;
    a test checks that the file matches the fields."""
    parts = ["# Settings", "",
             "Generated from the settings dataclasses by `python -m persona.settings_page > docs/settings.md`: each "
             "setting is declared once, on its field, and the command-line options, the config and job file keys "
             "(and their checks) and this page come from it.", ""]
    for title, cls, where in (
            ("generate", RunConfig, "`persona generate` options; keys of a run config (`-c`) and of a job file's `generate:`"),
            ("judge", JudgeSettings, "`persona generate`, `persona judge` and `persona build` options; a run config "
             "holds `judge:`, `judge_options:` (the options without `judge_`) and `pairwise:`, a job file `judge:` "
             "(a name, or a mapping of `name` and those options). Which `--judge-*` options apply is the chosen "
             "judge's to say"),
            ("build", BuildSettings, "`persona generate` and `persona build` options; keys of `build:` in a run config or job file"),
            ("train", TrainSettings, "`persona train` options; keys of each step of a job file's `train:` (and "
             "`refine:`, the settings below, for an on-policy round from the step named by `from:`)"),
            ("refine", RefineSettings, "`persona refine` options (on-policy preference rounds)"),
            ("eval", EvalSettings, "`persona eval` options; keys of a job file's `eval:`"),
            ("test", TestSettings, "`persona test` options (behaviour tests against a model or an endpoint; "
                                   "--judge as above)")):
        parts += [f"## {title}", "", where + ".", "", settings_table(cls), ""]
    return "\n".join(parts)


if __name__ == "__main__":
    print(settings_doc(), end="")
