"""The recipe - SFT, then one on-policy DPO round from it - and the keys that say whether a step's output is current.

    result = train_recipe("runs/brand")       # runs/brand/train-sft/, then runs/brand/refine-dpo/
    result.model                              # the model the round kept: the one to evaluate

`persona train RUN_DIR` without --method runs it, and jobs/demo.yaml spells it as two steps (`- method: sft`,
`- {method: dpo, from: sft, refine: true}`). A step is not run again when its output is current: the output
folder holds the key of the step that wrote it (persona_job.json, `write_mark`), made by `train_key` from
everything the step was asked - method, settings, the config file's text, model, start, data (by content),
system prompt, license, merge - by the CLI's recipe and by job files alike.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

JOB_MARK = "persona_job.json"  # in a train output, eval folder or rounds folder: the key of the step that wrote it


def step_key(value: dict) -> str:
    """A short, stable digest of what a step was asked."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_key(run, method: str) -> str:
    """The training data of `method` in the run folder `run`, by content."""
    from persona.methods import METHODS

    folder = run.dataset(METHODS[method].dataset)
    digest = hashlib.sha256()
    for split in ("train", "eval"):
        path = folder.split(split)
        digest.update(path.read_bytes() if path.is_file() else b"-")
    return digest.hexdigest()[:16]


NOT_IN_KEY = ("output_dir", "start")  # where a step writes does not shape its model; its start is the start's key


def train_key(run, settings, start: str | None) -> str:
    """The key of a training step on the run folder `run`: every setting of `settings` (persona.train.TrainSettings)
    that a job file can hold, by its file key, but where it writes; `start`, the key (or folder) of the step it
    starts from; its data, by content; and the text of a config file (-c) when one is given."""
    from dataclasses import fields

    from persona.options import key_of

    asked = {key_of(f): getattr(settings, f.name) for f in fields(settings)
             if f.metadata.get("file", True) and f.name not in NOT_IN_KEY}
    asked.update(start=start, data=data_key(run, settings.method))
    if settings.config is not None:
        config = Path(settings.config)
        asked["config"] = config.read_text(encoding="utf-8", errors="replace") if config.is_file() else None
    return step_key(asked)


def read_mark(folder: str | Path) -> str | None:
    """The key the step that wrote `folder` left there, or None."""
    try:
        return json.loads((Path(folder) / JOB_MARK).read_text(encoding="utf-8")).get("key")
    except (OSError, ValueError, AttributeError):
        return None


def write_mark(folder: str | Path, key: str) -> None:
    from persona.store import write_atomic

    Path(folder).mkdir(parents=True, exist_ok=True)
    write_atomic(Path(folder) / JOB_MARK, json.dumps({"key": key}) + "\n")


def recipe_applies(source: str | Path) -> tuple[bool, str]:
    """(whether `persona train SOURCE` without --method runs the recipe, why not): on a run folder, in one process.
    A dataset has no questions for the round to ask; several processes would each sample it."""
    from persona.run import RunFolder

    if not RunFolder(source).exists():
        return False, ""
    if os.environ.get("WORLD_SIZE", "1") != "1":
        return False, ("several processes: SFT only; run persona refine RUN_DIR/train-sft in one process for the "
                       "recipe's round")
    return True, ""


@dataclass
class RecipeResult:
    sft: object | None  # the SFT step's TrainResult; None when a finished one was kept
    sft_dir: Path
    rounds: object  # persona.refine.RefineResult

    @property
    def model(self) -> Path:
        """The model the recipe ends with (the round's, or the SFT model when no round raised the dev pass rate)."""
        return self.rounds.output_dir


def _no_logs(method, start):
    return None, None


def train_recipe(source: str | Path, settings=None, round_settings=None, logs: Callable = _no_logs,
                 on_progress: Callable | None = None, say: Callable[[str], None] = print,
                 on_trained: Callable | None = None) -> RecipeResult:
    """SFT on the run folder `source` with `settings` (persona.train.TrainSettings; its method is SFT), then one
    on-policy round from it (persona.refine with `round_settings`, default its own). Rerunning it keeps a finished
    SFT output that the same settings and data made, and resumes the round; an SFT trained now starts stale rounds
    beside it over. `logs(method, start)` gives each step's (on_log, on_start); `on_trained(result)` hears of the
    SFT step's TrainResult before the round begins."""
    from dataclasses import replace

    from persona.refine import RefineSettings, refine
    from persona.run import RunFolder, TrainOutput
    from persona.train import TrainSettings, train_with

    s = replace(settings or TrainSettings(), method="sft")
    run = RunFolder(source)
    key = train_key(run, s, str(s.start or ""))
    output = TrainOutput(s.output_dir) if s.output_dir else run.train_output("sft")
    kept = not (s.overwrite or s.resume) and output.is_finished() and read_mark(output.path) == key
    result = None
    if kept:
        say(f"{output.path}/ holds this recipe's finished SFT run: kept (--overwrite trains it again)")
    else:
        on_log, on_start = logs("sft", s.start)
        result = train_with(source, s, on_log, on_start)
        write_mark(result.output_dir, key)  # a rerun of the same recipe goes on to the round
        if on_trained is not None:
            on_trained(result)
    trained = output.path if kept else result.output_dir
    say(f"the recipe's second step: one on-policy DPO round from {trained}/ (persona refine's defaults)")
    on_log, on_start = logs("dpo", trained)
    # an SFT trained just now makes any rounds beside it stale: they start over
    rounds = refine(trained, round_settings or RefineSettings(), None, None, s.overwrite or result is not None,
                    on_progress, on_log, on_start, say)
    return RecipeResult(result, Path(trained), rounds)
