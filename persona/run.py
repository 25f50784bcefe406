"""The run folder and the trained-model folder: every path and manifest of a run, in one place.

Only this module knows where a run keeps its things; every stage asks it for paths, stores and manifests.

    runs/aster/                          RunFolder("runs/aster")
      run.json                           format, identity, spec hash, settings, judge, and the ids of the
                                         current records of each stage (saved when the stage finishes)
      synthesis.jsonl prompts.jsonl      one append-only store per stage (persona.store.JsonlStore)
      responses.jsonl judgements.jsonl
      datasets/build.json                the dataset build's numbers
      datasets/{dpo,kto,sft}/            TRL datasets: {train,eval}.jsonl + README.md (a dataset card)
      eval-base-answers.jsonl            the base model's eval answers, shared by every model of the run
      train-dpo/                         TrainOutput: a trained model (adapter or full) and its records
        persona_train.yaml               resolved settings, method, base model, dataset and its run
        metrics.json README.md           every logged step; the model card
        reward.json merged/ checkpoint-N/
        eval/metrics.json eval/answers.jsonl   EvalFolder: `persona eval` of this model
      report.html

    run = RunFolder("runs/aster")
    run.store("responses").load()           # {id: record}
    run.current("responses")                # the current records of the stage, in order
    run.train_output("dpo").settings()      # persona_train.yaml as a dict

A later stage reads what an earlier one saved (`current`); it never re-plans the earlier stage.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from persona.errors import PersonaError
from persona.store import JsonlStore, now, write_atomic

log = logging.getLogger("persona")

FORMAT_VERSION = 1
STAGES = ("synthesis", "prompts", "responses", "judgements")  # one JSONL store each
# folders under datasets/: pairs, unpaired thumbs, conversations, a reward model's pairs (whole and per target)
DATASET_KINDS = ("dpo", "kto", "sft", "reward")


class FolderLock:
    """One writer at a time: an exclusive lock on FOLDER/.persona.lock (fcntl.flock, released by the operating
    system when the process ends, however it ends), holding the writer's pid and command for the message the
    next one gets. Taken again by the same process it nests.

        with RunFolder("runs/aster").lock():    # PersonaError if another process writes there
            ...
    """

    _held: dict[str, list] = {}  # resolved lock path -> [file descriptor, depth]

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / ".persona.lock"

    def __enter__(self) -> "FolderLock":
        import fcntl

        key = str(self.path.resolve())
        if key in self._held:
            self._held[key][1] += 1
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 500).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise PersonaError(f"{self.folder} is in use by another persona process ({holder})",
                               hint="wait for it to finish, or stop it; to work side by side, use another folder "
                                    "(--out / --output-dir)") from None
        os.ftruncate(fd, 0)
        command = " ".join(["persona", *sys.argv[1:3]]) if sys.argv and sys.argv[0].endswith("persona") else "python"
        os.write(fd, f"pid {os.getpid()}, {command}, since {now()}".encode("utf-8"))
        self._held[key] = [fd, 1]
        return self

    def __exit__(self, *exc) -> bool:
        import fcntl

        key = str(self.path.resolve())
        entry = self._held[key]
        entry[1] -= 1
        if entry[1] == 0:
            del self._held[key]
            os.ftruncate(entry[0], 0)
            fcntl.flock(entry[0], fcntl.LOCK_UN)
            os.close(entry[0])
        return False


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def lock(self) -> FolderLock:
        """Held by every command that writes to the run (generate, judge, build, eval)."""
        return FolderLock(self.path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # ------------------------------------------------------------------ paths

    @property
    def manifest(self) -> Path:
        return self.path / "run.json"

    def store(self, stage: str) -> JsonlStore:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        return JsonlStore(self.path / f"{stage}.jsonl")

    @property
    def datasets(self) -> Path:
        return self.path / "datasets"

    def dataset(self, kind: str) -> "DatasetFolder":
        if kind not in DATASET_KINDS:
            raise ValueError(f"unknown dataset kind {kind!r}")
        return DatasetFolder(self.datasets / kind)

    @property
    def build_file(self) -> Path:
        return self.datasets / "build.json"

    @property
    def base_answers(self) -> JsonlStore:
        return JsonlStore(self.path / "eval-base-answers.jsonl")

    @property
    def base_scores(self) -> "KeyedJson":
        """The base model's perplexity and general-QA scores, by base model: computed once per run."""
        return KeyedJson(self.path / "eval-base-scores.json")

    @property
    def report_file(self) -> Path:
        return self.path / "report.html"

    def train_output(self, name: str) -> "TrainOutput":
        """The default output folder of a training method (train-METHOD)."""
        return TrainOutput(self.path / f"train-{name}")

    def trained(self) -> list["TrainOutput"]:
        """Every finished training output inside the run folder, by folder name."""
        found = [TrainOutput(p) for p in sorted(self.path.iterdir()) if p.is_dir()] if self.path.is_dir() else []
        for rounds in sorted(self.path.glob("refine-*")):  # persona refine's rounds (RefineRounds), by round
            found += [TrainOutput(p) for p in sorted(rounds.glob("round-*/train-*"),
                                                      key=lambda p: int(p.parent.name.split("-")[-1]))]
        return [t for t in found if t.is_finished()]

    # ------------------------------------------------------------------ run.json

    def exists(self) -> bool:
        return self.manifest.is_file()

    def info(self) -> dict:
        """run.json, or a PersonaError saying why there is none."""
        if not self.exists():
            raise PersonaError(f"{self.path} is not a persona run folder (no run.json)",
                               hint="pass the folder `persona generate` wrote, e.g. runs/brand")
        try:
            info = json.loads(self.manifest.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise PersonaError(f"{self.manifest} is not valid JSON",
                               hint="restore it from a backup, or generate into a new --out folder")
        if not isinstance(info, dict) or info.get("format") != FORMAT_VERSION:
            found = info.get("format") if isinstance(info, dict) else None
            raise PersonaError(
                f"{self.path} was written in run format {found!r}; this persona reads format {FORMAT_VERSION}",
                hint="move the folder away (or choose another --out) and generate again")
        return info

    def update(self, **fields) -> None:
        info = self.info()
        info.update(fields, updated=now())
        write_atomic(self.manifest, json.dumps(info, indent=2) + "\n")

    def open(self, spec, **fields) -> "RunFolder":
        """Create or check the folder for `spec`: refuses one from another format or another identity."""
        if self.exists():
            info = self.info()
            if info.get("identity") != spec.name:
                raise PersonaError(f"{self.path} holds a run of identity '{info.get('identity')}', not '{spec.name}'",
                                   hint="choose another --out")
            if info.get("spec_hash") != spec.spec_hash:
                log.warning("%s: the spec changed since the last run; records that depend on it are regenerated",
                            spec.path)
        else:
            from persona import __version__

            self.path.mkdir(parents=True, exist_ok=True)
            info = {"format": FORMAT_VERSION, "identity": spec.name, "created": now(), "persona_version": __version__}
        # spec_path as the user gave it (relative to where they ran persona), spec_file absolute: a later
        # command run from another folder still finds the spec
        info.update(spec_hash=spec.spec_hash, spec_path=spec.path, spec_file=os.path.abspath(spec.path),
                    updated=now(), **fields)
        write_atomic(self.manifest, json.dumps(info, indent=2) + "\n")
        return self

    def spec_path(self) -> str | None:
        """The run's spec file: as recorded when it exists from here, else where it was (absolute)."""
        info = self.info()
        recorded, absolute = info.get("spec_path"), info.get("spec_file")
        if recorded and not Path(recorded).exists() and absolute and Path(absolute).exists():
            return absolute
        return recorded

    # ------------------------------------------------------------------ the current records of each stage

    def finish_stage(self, stage: str, ids: list[str], **about) -> None:
        """Remember which records of `stage` the run uses now (in order), once the stage has finished."""
        info = self.info()
        current = info.get("current") or {}
        current[stage] = {"ids": list(ids), "finished": now(), **about}
        self.update(current=current)

    def current_ids(self, stage: str) -> list[str]:
        entry = (self.info().get("current") or {}).get(stage)
        if not entry:
            spec = self.info().get("spec_path", "SPEC")
            raise PersonaError(f"{self.path}: the {stage} stage has not finished",
                               hint=f"finish it first: persona generate {spec} --out {self.path}")
        return entry["ids"]

    def current(self, stage: str) -> list[dict]:
        """The current records of `stage`, in the order the stage saved them."""
        ids = self.current_ids(stage)
        saved = self.store(stage).load()
        missing = [i for i in ids if i not in saved]
        if missing:
            raise PersonaError(f"{self.path}: {len(missing)} {stage} records listed in run.json are missing from "
                               f"{stage}.jsonl", hint=f"run persona generate {self.info().get('spec_path', 'SPEC')} "
                                                      f"--out {self.path} again to regenerate them")
        return [saved[i] for i in ids]

    def build(self) -> dict | None:
        """datasets/build.json, or None before the first build."""
        return read_json(self.build_file) if self.build_file.is_file() else None


class DatasetFolder:
    """A dataset in TRL's format, as `datasets.load_dataset(folder)` reads it: {train,eval}.jsonl + README.md."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    def split(self, name: str) -> Path:
        return self.path / f"{name}.jsonl"

    @property
    def card(self) -> Path:
        return self.path / "README.md"

    @property
    def build_file(self) -> Path:
        """A persona build's numbers sit beside its dataset folders (datasets/build.json)."""
        return self.path.parent / "build.json"

    def build(self) -> dict:
        """The numbers of the persona build that wrote this folder ({} for a dataset persona did not build)."""
        return read_json(self.build_file) if self.path.is_dir() and self.build_file.is_file() else {}

    def run(self) -> "RunFolder | None":
        """The run folder a persona build wrote this dataset into (RUN/datasets/KIND), if any."""
        if self.path.parent.name == "datasets" and RunFolder(self.path.parent.parent).exists():
            return RunFolder(self.path.parent.parent)
        return None


class TrainOutput:
    """The output folder of `persona train`: a model (LoRA adapter or full), its settings, logs and card."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"TrainOutput({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def label(self) -> str:
        """The folder's name without the default "train-" prefix: "dpo" for train-dpo, "my-run" for my-run;
        "refine-dpo-r1" for round 1 of persona refine's refine-dpo rounds."""
        parent = self.path.parent
        if parent.name.startswith("round-") and (parent / "refine.json").is_file():
            return f"{parent.parent.name}-r{parent.name.removeprefix('round-')}"
        return self.path.name.removeprefix("train-")

    @property
    def settings_file(self) -> Path:
        return self.path / "persona_train.yaml"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.json"

    @property
    def card(self) -> Path:
        return self.path / "README.md"

    @property
    def reward_file(self) -> Path:
        return self.path / "reward.json"

    @property
    def merged(self) -> Path:
        return self.path / "merged"

    @property
    def eval(self) -> "EvalFolder":
        return EvalFolder(self.path / "eval")

    def lock(self) -> FolderLock:
        """Held while training writes into the folder."""
        return FolderLock(self.path)

    def has_adapter(self) -> bool:
        return (self.path / "adapter_config.json").is_file()

    def has_model(self) -> bool:
        return (self.path / "config.json").is_file()

    def has_tokenizer(self) -> bool:
        return (self.path / "tokenizer_config.json").is_file()

    def adapter_config(self) -> dict:
        return read_json(self.path / "adapter_config.json")

    def name_adapter_base(self, model_id: str) -> None:
        """Point the PEFT adapter at its base model's public id (shareable), instead of a local path."""
        from persona.store import write_atomic

        config = self.adapter_config()
        config["base_model_name_or_path"] = model_id
        write_atomic(self.path / "adapter_config.json", json.dumps(config, indent=2) + "\n")

    def is_finished(self) -> bool:
        return self.metrics_file.is_file() and self.settings_file.is_file()

    def checkpoints(self) -> list[Path]:
        found = [p for p in self.path.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
        return sorted(found, key=lambda p: int(p.name.split("-")[-1]))

    def last_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def settings(self) -> dict:
        """persona_train.yaml ({} for a model persona did not train)."""
        if not self.settings_file.is_file():
            return {}
        import yaml

        try:
            data = yaml.safe_load(self.settings_file.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise PersonaError(f"{self.settings_file}: not readable YAML ({type(e).__name__})",
                               hint="train again with --overwrite, or fix the file by hand")
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise PersonaError(f"{self.settings_file}: expected a mapping of settings",
                               hint="train again with --overwrite, or fix the file by hand")
        return data

    def write_settings(self, settings: dict) -> None:
        import yaml

        write_atomic(self.settings_file, yaml.safe_dump(settings, sort_keys=False))

    def metrics(self) -> list:
        return read_json(self.metrics_file, list)

    def write_metrics(self, logs: list) -> None:
        write_atomic(self.metrics_file, json.dumps(logs, indent=2) + "\n")

    def reward(self) -> dict | None:
        return read_json(self.reward_file) if self.reward_file.is_file() else None

    def write_reward(self, numbers: dict) -> None:
        write_atomic(self.reward_file, json.dumps(numbers, indent=2) + "\n")

    def start(self) -> Path | None:
        """The trained output this one started from (--from), found as `run()` finds the run."""
        recorded = self.settings().get("start")
        return recorded_path(recorded, self.path, lambda p: TrainOutput(p).is_finished()) if recorded else None

    def run(self) -> RunFolder | None:
        """The run folder the training data came from, when it came from one."""
        settings = self.settings()
        found = recorded_path(settings["run"], self.path, lambda p: RunFolder(p).exists()) if settings.get("run") else None
        if found is not None:
            return RunFolder(found)
        if settings.get("dataset"):  # outputs of an earlier persona recorded only the dataset folder
            return DatasetFolder(settings["dataset"]).run()
        return None


def recorded_path(recorded: str, output: Path, accept) -> Path | None:
    """A folder a training output recorded as it was given when it trained (often relative to that working
    folder): that path from here when `accept` takes it, else the same path under the nearest folder above the
    output (the tree was trained from another working folder, or moved as a whole)."""
    path = Path(recorded)
    if accept(path):
        return path
    if path.is_absolute():
        return None
    return next((above / path for above in Path(output).resolve().parents if accept(above / path)), None)


class RefineFolder:
    """One round of `persona refine`: refine.json, samples.jsonl, labels.jsonl, data/KIND/ and train-METHOD/."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def info_file(self) -> Path:
        return self.path / "refine.json"

    @property
    def samples(self) -> Path:
        return self.path / "samples.jsonl"

    @property
    def labels(self) -> Path:
        return self.path / "labels.jsonl"

    def dataset(self, kind: str) -> DatasetFolder:
        return DatasetFolder(self.path / "data" / kind)

    def output(self, method: str) -> Path:
        return self.path / f"train-{method}"

    def lock(self) -> FolderLock:
        return FolderLock(self.path)


class RefineRounds:
    """The rounds of `persona refine` (default: beside the trained start, refine-METHOD/): round-N/, the dev
    answers of the last round's model (final/) and rounds.json."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def beside(cls, start: str | Path, method: str) -> "RefineRounds":
        return cls(Path(start).parent / f"refine-{method}")

    def round(self, number: int) -> RefineFolder:
        return RefineFolder(self.path / f"round-{number}")

    @property
    def table_file(self) -> Path:
        return self.path / "rounds.json"

    def dev_files(self, name: str) -> tuple[Path, Path]:
        """(answers, labels) of the dev conversations for the model of round `name`."""
        return self.path / "final" / f"dev-{name}.jsonl", self.path / "final" / f"dev-{name}-labels.jsonl"

    def contents(self) -> list[Path]:
        return [*self.path.glob("round-*"), self.path / "final", self.table_file]

    def lock(self) -> FolderLock:
        return FolderLock(self.path)


class EvalFolder:
    """What `persona eval` writes for one model: metrics.json and answers.jsonl."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.json"

    @property
    def answers(self) -> JsonlStore:
        return JsonlStore(self.path / "answers.jsonl")

    @property
    def base_scores(self) -> "KeyedJson":
        return KeyedJson(self.path / "base-scores.json")

    @property
    def exported(self) -> Path:
        """The trained adapter merged into full weights, for a backend that loads a model folder (eval -b vllm)."""
        return self.path / "model"

    def lock(self) -> FolderLock:
        return FolderLock(self.path)

    def metrics(self) -> dict | None:
        return read_json(self.metrics_file) if self.metrics_file.is_file() else None

    def write_metrics(self, metrics: dict) -> None:
        write_atomic(self.metrics_file, json.dumps(metrics, indent=2) + "\n")


class TestFolder:
    """What `persona test` writes for one model and spec: answers.jsonl (resumable), results.json, junit.xml."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def default(cls, model: str, spec_name: str) -> "TestFolder":
        """OUTPUT/tests/SPEC for a trained output, else persona-tests/SPEC/MODEL (an endpoint's host, a model name)."""
        import re

        if Path(model).is_dir() and TrainOutput(model).settings_file.is_file():
            return cls(Path(model) / "tests" / spec_name)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", re.sub(r"^https?://", "", model)).strip("-")[:80] or "model"
        return cls(Path("persona-tests") / spec_name / slug)

    @property
    def answers(self) -> JsonlStore:
        return JsonlStore(self.path / "answers.jsonl")

    @property
    def results_file(self) -> Path:
        return self.path / "results.json"

    @property
    def junit_file(self) -> Path:
        return self.path / "junit.xml"

    def lock(self) -> FolderLock:
        return FolderLock(self.path)


class KeyedJson:
    """A small JSON object of cached results by key, rewritten atomically on each put."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def get(self, key: str):
        return (read_json(self.path) if self.path.is_file() else {}).get(key)

    def put(self, key: str, value) -> None:
        data = read_json(self.path) if self.path.is_file() else {}
        data[key] = value
        write_atomic(self.path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path, kind: type = dict):
    """A JSON file persona wrote, or a PersonaError naming it when it is not readable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PersonaError(f"{path} not found", hint="run the stage that writes it first")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PersonaError(f"{path}: not valid JSON ({type(e).__name__})",
                           hint="the file is damaged: run the stage that writes it again")
    if not isinstance(data, kind):
        raise PersonaError(f"{path}: expected a JSON {'object' if kind is dict else 'list'}",
                           hint="the file is damaged: run the stage that writes it again")
    return data
