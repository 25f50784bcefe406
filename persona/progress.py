"""Progress on stderr while long work runs: a rich bar on a terminal, periodic one-line updates in a log file
or CI, and one line per logged training step.

    with progress_bar() as on_progress:         # on_progress(stage, done, total, tokens)
        generate(spec, config, on_progress)
    on_log, on_start = training_log(say, "sft")  # for persona.train.train's on_log / on_start
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class _Lines:
    """Progress for a log file or CI (stderr is not a terminal): a line per stage when it starts, every
    PERSONA_PROGRESS_SECONDS (default 30) while it runs - also while a long batch is still in progress - and
    when it completes: count, rate, tokens/s, elapsed, ETA."""

    def __init__(self):
        import threading
        import time

        self.clock = time.monotonic
        self.every = float(os.environ.get("PERSONA_PROGRESS_SECONDS") or 30)
        self.stages: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._heartbeat, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.update

    def _heartbeat(self) -> None:
        while not self.stop.wait(self.every):
            with self.lock:
                for stage, state in self.stages.items():
                    if state["done"] < state["total"]:
                        self._show(stage, state)

    def _show(self, stage: str, state: dict) -> None:
        elapsed = self.clock() - state["start"]
        done, total = state["done"], state["total"]
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = duration((total - done) / rate) if rate and done < total else "-"
        say(f"{stage:<9} {done}/{total}  {rate:.2f}/s  {state['tokens'] / elapsed if elapsed > 0 else 0:.0f} tok/s  "
             f"elapsed {duration(elapsed)}  eta {eta}")

    def update(self, stage: str, done: int, total: int, tokens: int) -> None:
        with self.lock:
            new = stage not in self.stages
            state = self.stages.setdefault(stage, {"start": self.clock(), "tokens": 0})
            state.update(done=done, total=total, tokens=state["tokens"] + tokens)
            if new or done >= total:
                self._show(stage, state)

    def __exit__(self, *exc):
        self.stop.set()
        return False


def progress_bar():
    """Progress on stderr: a rich bar on a terminal, periodic one-line updates otherwise (logs, CI)."""
    return _Rich() if sys.stderr.isatty() else _Lines()


class _Rich:
    """A rich progress bar on stderr per stage: counts, rate, tokens and ETA. Starts at the first update,
    so a run that fails early or has nothing to do prints no empty bar."""

    def __enter__(self):
        self.progress = None
        self.tasks: dict[str, int] = {}
        self.tokens: dict[str, int] = {}
        return self.update

    def _start(self):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.progress = Progress(
            TextColumn("{task.description:<9}"), BarColumn(bar_width=24), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[tokens]:,} tok"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=Console(stderr=True))
        self.progress.__enter__()

    def update(self, stage: str, done: int, total: int, tokens: int) -> None:
        if self.progress is None:
            self._start()
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total, rate="", tokens=0)
            self.tokens[stage] = 0
        self.tokens[stage] += tokens
        elapsed = self.progress.tasks[self.tasks[stage]].elapsed or 0
        rate = f"{done / elapsed:.2f} req/s {self.tokens[stage] / elapsed:.0f} tok/s" if elapsed > 0 and done else ""
        self.progress.update(self.tasks[stage], completed=done, total=total, rate=rate, tokens=self.tokens[stage])

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)
        return False


def training_log(say: Callable[[str], None], method: str, start: str | Path | None = None):
    """(on_log, on_start) for persona.train.train: the resolved settings when training starts, then one line per
    logged step - step/total, the loss and the method's own numbers, time per step and ETA (the rate leaves out
    loading the model)."""
    first: list = []  # (time, step) of the first logged step

    def on_log(entry: dict) -> None:
        if "loss" not in entry:  # the closing summary TRL logs; the caller prints its own
            return
        step, total = entry.get("step") or 0, entry.get("max_steps") or 0
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in entry.items()
                 if k in ("loss", "rewards/margins", "rewards/accuracies", "reward", "kl", "accuracy",
                          "mean_token_accuracy")}
        if not first:
            first.append((time.monotonic(), step))
        per_step = (time.monotonic() - first[0][0]) / (step - first[0][1]) if step > first[0][1] else 0
        eta = f"  eta {duration(per_step * (total - step))}" if total and per_step else ""
        say(f"  step {step}/{total or '?'}  " + "  ".join(f"{k} {v}" for k, v in shown.items())
            + (f"  {per_step:.1f} s/step{eta}" if per_step else ""))

    def on_start(settings: dict, out: Path) -> None:
        say(f"training {method} into {out}/" + (f", starting from {start}/" if start else "") + " with:")
        for key, value in settings.items():
            say(f"  {key}: {value}")

    return on_log, on_start


class _Stderr:
    """Looks sys.stderr up at each write, so log lines go through the progress bar's redirection."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def setup_logging() -> None:
    """persona's log lines (warnings; PERSONA_VERBOSE=1: info too) on stderr, through the progress bar's
    redirection; the ML libraries' own progress bars off and their deprecation notices (meant for their callers'
    code) and PEFT's notice about adapters persona deletes after merging them kept out."""
    import logging

    logger = logging.getLogger("persona")
    if not logger.handlers:
        handler = logging.StreamHandler(_Stderr())
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO if os.environ.get("PERSONA_VERBOSE") else logging.WARNING)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # persona shows its own progress
    import warnings

    for module in ("transformers", "trl", "peft", "accelerate"):  # their deprecations are for their callers' code
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
    warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted", category=UserWarning)
