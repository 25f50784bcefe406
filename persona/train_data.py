"""Training data: where a method's rows come from (a run folder, a dataset folder or a JSONL file in TRL's
format) and the checks every row passes before a model loads (file:line messages, at most 20 of them).

    data, card, where, run = find_dataset("runs/brand", "dpo")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from persona.errors import PersonaError
from persona.methods import COLUMNS, METHODS
from persona.run import DatasetFolder, RunFolder


def find_dataset(source: str | Path, name: str) -> tuple[Any, dict, str, RunFolder | None]:
    """(DatasetDict, card numbers, where it came from, its run folder) for a run folder, a dataset folder or a
    JSONL file."""
    from datasets import DatasetDict, load_dataset

    path = Path(source)
    run = RunFolder(path) if RunFolder(path).exists() else None
    if run is not None:
        if run.build() is None:
            raise PersonaError(f"{path} has no datasets yet", hint=f"run: persona build {path}")
        path = run.dataset(METHODS[name].dataset).path
        if not path.is_dir() and METHODS[name].dataset == "reward":  # built before reward pairs had their own folder
            path = run.dataset("dpo").path
    folder = DatasetFolder(path)
    card = folder.build()
    run = run or folder.run()
    files = [path] if path.is_file() else [f for f in (folder.split("train"), folder.split("eval")) if f.is_file()]
    check_rows(files, prompts_only=METHODS[name].dataset == "prompts")
    if path.is_dir():
        try:
            data = load_dataset(str(path))
        except Exception as e:  # datasets raises many types for an unreadable folder
            detail = (str(e).splitlines() or [""])[0][:160]
            raise PersonaError(f"{path}: not a dataset folder ({type(e).__name__}{': ' + detail if detail else ''})",
                               hint="give a run folder, a folder written by persona build, or a .jsonl file")
    elif path.is_file():
        if not path.read_bytes().strip():
            raise PersonaError(f"{path}: the file is empty", hint="one JSON object per line, in TRL's format (see docs/guide.md, 'Judging and datasets')")
        try:
            data = DatasetDict({"train": load_dataset("json", data_files=str(path), split="train")})
        except Exception as e:
            raise PersonaError(f"{path}: cannot read it as JSON lines ({type(e).__name__})",
                               hint="one JSON object per line, in TRL's format (see docs/guide.md, 'Judging and datasets')")
    else:
        raise PersonaError(f"dataset '{source}' not found", hint="give a run folder, a dataset folder or a .jsonl file")
    return data, card, str(path), run


ROLES = ("system", "user", "assistant", "tool")


TEXT_FIELDS = ("prompt", "chosen", "rejected", "completion", "messages")


MAX_ROW_PROBLEMS = 20


def check_rows(files: list[Path], prompts_only: bool = False) -> None:
    """Every row of the JSONL files, checked before any training, each problem as file:line: what is wrong.

    A row is a JSON object of one format throughout (pairs: prompt/chosen/rejected; thumbs: prompt/completion/
    label; SFT: prompt/completion or messages; RL, `prompts_only`: prompt); every text field is non-empty text or a list of messages with
    a known role and text content, the same kind in every row; chosen differs from rejected; a label is true or
    false."""
    problems: list[str] = []
    first: dict[str, tuple[str, str]] = {}  # what the first row had: field -> (kind, where)
    for file in files:
        try:
            lines = file.read_bytes().split(b"\n")
        except OSError as e:
            raise PersonaError(f"{file}: cannot read it ({e.strerror or e})", hint="check the file's permissions")
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            where = f"{file}:{number}"
            problems += _row_problems(raw, where, first, prompts_only)
            if len(problems) >= MAX_ROW_PROBLEMS:
                break
    if problems:
        more = f" (and more; showing the first {MAX_ROW_PROBLEMS})" if len(problems) >= MAX_ROW_PROBLEMS else ""
        raise PersonaError("\n".join(problems[:MAX_ROW_PROBLEMS]) + more,
                           hint="fix or remove those rows; persona's own datasets (persona build) have this format")


def _row_problems(raw: bytes, where: str, first: dict, prompts_only: bool = False) -> list[str]:
    import math

    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        return [f"{where}: not valid UTF-8 (byte 0x{raw[e.start]:02x})"]
    except (json.JSONDecodeError, RecursionError, ValueError) as e:
        return [f"{where}: not a JSON object ({getattr(e, 'msg', type(e).__name__)})"]
    if not isinstance(row, dict):
        return [f"{where}: a row is a JSON object, got {type(row).__name__}"]
    out = []
    shape = "pairs" if {"chosen", "rejected"} <= set(row) else "thumbs" if "label" in row else \
        "messages" if "messages" in row else "prompt-completion" if "completion" in row else \
        "prompts" if prompts_only and "prompt" in row else None
    if shape is None and ({"chosen", "rejected"} & set(row)):
        missing = ", ".join(c for c in ("prompt", "chosen", "rejected") if c not in row)
        return [f"{where}: a preference pair needs prompt, chosen and rejected; missing {missing}"]
    if shape is None:
        return [f"{where}: no chosen/rejected, completion or messages column (columns: {', '.join(sorted(row)) or 'none'})"]
    if first.setdefault("shape", (shape, where))[0] != shape:
        out.append(f"{where}: a {shape} row among {first['shape'][0]} rows (first at {first['shape'][1]}): one "
                   "format per dataset")
    for column in TEXT_FIELDS:
        if column not in row:
            continue
        value, kind = row[column], None
        if isinstance(value, str):
            kind = "text"
            if not value.strip():
                out.append(f"{where}: {column} is empty")
        elif isinstance(value, list) and value:
            kind = "messages"
            for i, message in enumerate(value):
                if not isinstance(message, dict) or message.get("role") not in ROLES:
                    role = message.get("role") if isinstance(message, dict) else message
                    out.append(f"{where}: {column}[{i}] has role {role!r}; roles are {', '.join(ROLES)}")
                elif not isinstance(message.get("content"), str):
                    out.append(f"{where}: {column}[{i}] has no text content")
                elif not message["content"].strip() and message["role"] != "system":
                    out.append(f"{where}: {column}[{i}] ({message['role']}) is empty")
        else:
            out.append(f"{where}: {column} must be text or a list of messages, got "
                       f"{'nothing' if value is None else 'an empty list' if value == [] else type(value).__name__}")
        if kind and first.setdefault(column, (kind, where))[0] != kind:
            out.append(f"{where}: {column} is {kind} where the rows before have {first[column][0]} "
                       f"(first at {first[column][1]}): one format per dataset")
    if shape == "pairs" and row.get("chosen") == row.get("rejected"):
        out.append(f"{where}: chosen and rejected are the same: the pair teaches nothing")
    if "label" in row and not isinstance(row["label"], bool):
        label = row["label"]
        shown = "NaN" if isinstance(label, float) and math.isnan(label) else json.dumps(label)
        out.append(f"{where}: label must be true or false, got {shown}")
    return out


def check_columns(data, name: str, where: str):
    """TRL-format checks with clear messages; KTO rows from pairs are unpaired, DPO on unpaired rows is an error."""
    from trl import unpair_preference_dataset

    method = METHODS[name]
    train_split = data["train"] if "train" in data else None
    if train_split is None or train_split.num_rows == 0:
        raise PersonaError(f"{where}: the training split is empty",
                           hint="generate more data, lower --margin in persona build, or check the file")
    columns = set(train_split.column_names)
    paired = {"chosen", "rejected"} <= columns
    unpaired = {"completion", "label"} <= columns
    needed = COLUMNS[method.dataset]
    if method.dataset == "prompts":
        if "prompt" not in columns:
            raise PersonaError(f"{where}: {name.upper()} needs a prompt column", hint="rows like {\"prompt\": [...]}")
        return data
    if method.dataset == "sft":
        return _sft_rows(data, columns, paired, where)
    if method.dataset == "kto":
        if paired and not unpaired:
            return unpair_preference_dataset(data)
        missing = [c for c in needed if c not in columns]
        if missing:
            raise PersonaError(f"{where}: KTO needs columns {', '.join(needed)}; missing {', '.join(missing)}",
                               hint="rows like {\"prompt\": ..., \"completion\": ..., \"label\": true}")
        return data
    if unpaired and not paired:
        raise PersonaError(f"{where}: {name.upper()} needs preference pairs, but these rows are unpaired "
                           "(prompt/completion/label)", hint="use --method kto for thumbs-up/down data")
    if method.model == "reward":
        needed = ("chosen", "rejected")  # the reward trainer also takes pairs without a prompt
    missing = [c for c in needed if c not in columns]
    if missing:
        raise PersonaError(f"{where}: {name.upper()} needs columns {', '.join(needed)}; missing {', '.join(missing)}",
                           hint="rows like {\"prompt\": [...], \"chosen\": [...], \"rejected\": [...]}")
    return data


def _sft_rows(data, columns: set, paired: bool, where: str):
    """SFT reads prompt/completion rows or messages; thumbs rows keep their thumbs-up ones, pairs their chosen side."""
    if "messages" in columns or ({"prompt", "completion"} <= columns and "label" not in columns):
        return data
    if {"prompt", "completion", "label"} <= columns:
        return data.filter(lambda row: bool(row["label"])).remove_columns(["label"])
    if paired and "prompt" in columns:
        return data.remove_columns(["rejected"]).rename_column("chosen", "completion")
    raise PersonaError(f"{where}: SFT needs columns prompt, completion (or messages); found {', '.join(sorted(columns))}",
                       hint="rows like {\"prompt\": [...], \"completion\": [...]}, or a run folder's datasets/sft")


def content_fingerprint(dataset) -> str:
    """A hash of a datasets.Dataset's rows (in order), independent of how it was made."""
    import hashlib

    digest = hashlib.sha256()
    for batch in dataset.with_format(None).iter(batch_size=1000):
        digest.update(json.dumps(batch, sort_keys=True, default=str).encode("utf-8"))
    return digest.hexdigest()[:16]
