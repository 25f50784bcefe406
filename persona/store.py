"""Append-only JSONL stores: one per stage of a run (persona.run names the files), every record keyed by a
hash of its inputs, and the one resume loop every stage uses.

Resuming is a lookup: a stage computes the key of every record it needs, skips those already in its file
and appends the rest as they finish (one `write` + flush per request), so a crash or Ctrl-C loses only
what was in flight. A crash can leave a half-written last line: it is detected, dropped with a warning
and cut from the file before anything new is appended. A bad line elsewhere is corruption and an error.

    store = JsonlStore(run / "responses.jsonl")
    done = store.load()                    # {id: record}
    store.append([record, ...])            # one request's records, written together
    done, made = append_missing(store, requests, lambda pending: backend.complete(pending), to_records)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from persona.errors import PersonaError

log = logging.getLogger("persona")


def input_key(*parts) -> str:
    """A stable 16-hex-digit key for a record's inputs (any JSON-serialisable values)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and a rename: readers never see a half-written file. The temporary name is
    unique to this process and call, so two writers never write into each other's."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class JsonlStore:
    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self, repair: bool = False) -> dict[str, dict]:
        """Every record in the file by id (first one wins). A half-written last line (a crash mid-write, or a
        writer still at work) is left out; only the writer, with `repair=True`, cuts it from the file before
        appending. Reading never changes the file."""
        if not self.path.exists():
            return {}
        try:
            raw = self.path.read_bytes()
        except OSError as e:
            raise PersonaError(f"{self.path}: cannot read it ({e.strerror or e})", hint="check the file's permissions")
        lines = raw.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline
        records: dict[str, dict] = {}
        good_bytes = 0
        for number, line in enumerate(lines, start=1):
            last = number == len(lines) and not tail
            try:
                record = json.loads(line) if line.strip() else None
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError) as e:
                if last:  # a complete-looking but broken last line: also the mark of a crash mid-write
                    return self._drop_tail(records, good_bytes, len(raw) - good_bytes, repair)
                reason = e.msg if isinstance(e, json.JSONDecodeError) else type(e).__name__
                raise PersonaError(f"{self.path}:{number}: not a valid JSON record ({reason})",
                                   hint="the rest of the file is intact: move that line out of the file (keep a copy "
                                        "first) and run again; only the missing records are made again")
            good_bytes += len(line) + 1
            if record is None:
                continue
            if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                raise PersonaError(f"{self.path}:{number}: record has no \"id\"",
                                   hint="this file was not written by persona, or was edited by hand")
            records.setdefault(record["id"], record)
        if tail:
            return self._drop_tail(records, good_bytes, len(tail), repair)
        return records

    def _drop_tail(self, records: dict, keep_bytes: int, dropped: int, repair: bool) -> dict:
        if repair:
            log.warning("%s: dropped a truncated last line (%d bytes) left by an interrupted run", self.path, dropped)
            with open(self.path, "r+b") as f:
                f.truncate(keep_bytes)
        return records

    def append(self, records: list[dict]) -> None:
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(data)
            f.flush()


def append_missing(store: JsonlStore, items: Sequence, run: Callable[[list], Iterable], to_records: Callable[[Any], list[dict]],
                   is_done: Callable[[Any, dict], bool] = lambda item, done: item.key in done,
                   stage: str = "", on_progress: Callable | None = None) -> tuple[dict[str, dict], int]:
    """The resume loop of every stage: run the items that are not done yet and append their records.

    `run(pending)` yields one result per pending item, in any order (a backend's `complete`, a judge's
    `judge`); `to_records(result)` turns it into records, which are appended and flushed at once. Called
    with nothing pending, `run` is never called (so a finished stage never loads a model). Returns
    ({id: record} for everything in the store, how many items were run). `on_progress(stage, done, total,
    tokens)` is told after each result.
    """
    done = store.load(repair=True)  # the stage is the store's writer (it holds the run folder's lock)
    pending = [item for item in items if not is_done(item, done)]
    results = run(pending) if pending else ()  # e.g. loads the backend: fails before any progress is shown
    if pending and on_progress:
        on_progress(stage, 0, len(pending), 0)
    for count, result in enumerate(results, 1):
        records = [r for r in to_records(result) if r["id"] not in done]  # a resumed request's kept samples win
        store.append(records)
        done.update((r["id"], r) for r in records)
        if on_progress:
            on_progress(stage, count, len(pending), sum(r.get("completion_tokens", 0) for r in records))
    return done, len(pending)
