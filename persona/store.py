"""Run folders: one append-only JSONL file per stage, every record keyed by a hash of its inputs.

    runs/brand/
      run.json            format version, identity, spec hash, persona version
      synthesis.jsonl     raw replies of the probe-synthesis requests
      prompts.jsonl       probe prompts (train and eval split)
      responses.jsonl     conforming and violating responses with their provenance

Resuming is a lookup: a stage computes the key of every record it needs, skips those already in its file
and appends the rest as they finish (one `write` + flush per request), so a crash or Ctrl-C loses only
what was in flight. A crash can leave a half-written last line: it is detected, dropped with a warning
and cut from the file before anything new is appended. A bad line elsewhere is corruption and an error.

    store = JsonlStore(run / "responses.jsonl")
    done = store.load()                    # {id: record}
    store.append([record, ...])            # one request's records, written together
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

from persona.errors import PersonaError

log = logging.getLogger("persona")

FORMAT_VERSION = 1


def input_key(*parts) -> str:
    """A stable 16-hex-digit key for a record's inputs (any JSON-serialisable values)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and a rename: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class JsonlStore:
    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> dict[str, dict]:
        """Every record in the file by id (first one wins); repairs a truncated last line."""
        if not self.path.exists():
            return {}
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline
        records: dict[str, dict] = {}
        good_bytes = 0
        for number, line in enumerate(lines, start=1):
            last = number == len(lines) and not tail
            try:
                record = json.loads(line) if line.strip() else None
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                if last:  # a complete-looking but broken last line: also the mark of a crash mid-write
                    return self._drop_tail(records, good_bytes, len(raw) - good_bytes)
                raise PersonaError(f"{self.path}:{number}: not a valid JSON record ({e.msg if hasattr(e, 'msg') else e})",
                                   hint="the file is corrupted: delete that line (or the file) and run again to regenerate it")
            good_bytes += len(line) + 1
            if record is None:
                continue
            if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                raise PersonaError(f"{self.path}:{number}: record has no \"id\"",
                                   hint="this file was not written by persona, or was edited by hand")
            records.setdefault(record["id"], record)
        if tail:
            return self._drop_tail(records, good_bytes, len(tail))
        return records

    def _drop_tail(self, records: dict, keep_bytes: int, dropped: int) -> dict:
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


def read_run_info(folder: Path) -> dict:
    """run.json of a run folder, or a PersonaError saying why there is none."""
    manifest = Path(folder) / "run.json"
    if not manifest.exists():
        raise PersonaError(f"{folder} is not a persona run folder (no run.json)",
                           hint="pass the folder `persona generate` wrote, e.g. runs/brand")
    try:
        info = json.loads(manifest.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PersonaError(f"{manifest} is not valid JSON", hint="delete the run folder or choose another --out")
    if info.get("format") != FORMAT_VERSION:
        raise PersonaError(
            f"{folder} was written in run format {info.get('format')!r}; this persona reads format {FORMAT_VERSION}",
            hint="move the folder away (or choose another --out) and generate again")
    return info


def update_run_info(folder: Path, **fields) -> None:
    manifest = Path(folder) / "run.json"
    info = json.loads(manifest.read_text(encoding="utf-8"))
    info.update(fields, updated=now())
    write_atomic(manifest, json.dumps(info, indent=2) + "\n")


def open_run(folder: Path, spec, **fields) -> Path:
    """Create or check a run folder for `spec`: refuses one from another format or another identity."""
    folder = Path(folder)
    manifest = folder / "run.json"
    if manifest.exists():
        info = read_run_info(folder)
        if info.get("identity") != spec.name:
            raise PersonaError(f"{folder} holds a run of identity '{info.get('identity')}', not '{spec.name}'",
                               hint="choose another --out")
        if info.get("spec_hash") != spec.spec_hash:
            log.warning("%s: the spec changed since the last run; records that depend on it are regenerated", spec.path)
    else:
        from persona import __version__

        folder.mkdir(parents=True, exist_ok=True)
        info = {"format": FORMAT_VERSION, "identity": spec.name, "created": now(), "persona_version": __version__}
    info.update(spec_hash=spec.spec_hash, spec_path=spec.path, updated=now(), **fields)
    write_atomic(manifest, json.dumps(info, indent=2) + "\n")
    return folder
