"""Fuzzing the run stores: whatever bytes a crash, a disk or a person leaves in a JSONL store, reading it gives
the records or one PersonaError naming the file and line - never another exception - and never changes the
file; the writer's repair cuts only a torn last line and keeps every complete record."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persona.errors import PersonaError
from persona.store import JsonlStore

RECORD = st.fixed_dictionaries({"id": st.text(min_size=1, max_size=12), "text": st.text(max_size=40)})
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(records=st.lists(RECORD, max_size=6), junk=st.binary(max_size=120))
def test_reading_any_bytes_is_a_record_set_or_one_clear_error_and_changes_nothing(tmp_path, records, junk):
    path = tmp_path / "store.jsonl"
    raw = b"".join(json.dumps(r).encode() + b"\n" for r in records) + junk
    path.write_bytes(raw)
    store = JsonlStore(path)
    try:
        loaded = store.load()
    except PersonaError as e:
        assert e.message.startswith(f"{path}:") and e.hint
    else:
        for r in records:  # every complete record before the junk is there (first one of an id wins)
            assert r["id"] in loaded
    assert path.read_bytes() == raw  # reading never changes the file


@FUZZ
@given(records=st.lists(RECORD, min_size=1, max_size=6), cut=st.integers(min_value=1, max_value=200))
def test_a_torn_last_line_is_cut_by_the_writer_only(tmp_path, records, cut):
    path = tmp_path / "store.jsonl"
    whole = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    last = json.dumps({"id": "torn", "text": "x" * 50}).encode()
    raw = whole + last[:min(cut, len(last) - 1)]
    path.write_bytes(raw)
    store = JsonlStore(path)
    assert set(store.load()) == {r["id"] for r in records} and path.read_bytes() == raw
    assert set(store.load(repair=True)) == {r["id"] for r in records} and path.read_bytes() == whole
