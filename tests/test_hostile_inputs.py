"""Hostile and careless input to training, run folders and reports: every case ends in one clear message (file and
line where there is one), a non-zero exit from the CLI, no traceback, and no finished work lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from persona.errors import PersonaError
from persona.run import RunFolder
from persona.store import JsonlStore, write_atomic
from persona.train_data import check_rows

PAIR = {"prompt": [{"role": "user", "content": "Who are you?"}], "chosen": [{"role": "assistant", "content": "Aster."}],
        "rejected": [{"role": "assistant", "content": "ChatGPT."}]}
THUMB = {"prompt": [{"role": "user", "content": "Who are you?"}],
         "completion": [{"role": "assistant", "content": "Aster."}], "label": True}


def rows_file(tmp_path, *rows, raw: bytes = b""):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows) + raw)
    return path


@pytest.mark.parametrize("row,message", [
    ({**PAIR, "chosen": ""}, "chosen is empty"),
    ({**PAIR, "rejected": PAIR["chosen"]}, "chosen and rejected are the same: the pair teaches nothing"),
    ({**PAIR, "prompt": [{"role": "wizard", "content": "Hi"}]}, "prompt[0] has role 'wizard'; roles are system, user, assistant, tool"),
    ({**PAIR, "chosen": [{"role": "assistant"}]}, "chosen[0] has no text content"),
    ({**PAIR, "chosen": None}, "chosen must be text or a list of messages, got nothing"),
    ({**PAIR, "chosen": []}, "chosen must be text or a list of messages, got an empty list"),
    ({**THUMB, "label": 5}, "label must be true or false, got 5"),
    ({**THUMB, "label": "yes"}, 'label must be true or false, got "yes"'),
    ({**THUMB, "label": None}, "label must be true or false, got null"),
    ({**THUMB, "completion": [{"role": "assistant", "content": "  "}]}, "completion[0] (assistant) is empty"),
    ([1, 2], "a row is a JSON object, got list"),
    ({"text": "hello"}, "no chosen/rejected, completion or messages column (columns: text)"),
])
def test_bad_rows_are_named_by_file_and_line(tmp_path, row, message):
    path = rows_file(tmp_path, PAIR if "chosen" in (row if isinstance(row, dict) else {}) else THUMB, row)
    with pytest.raises(PersonaError) as e:
        check_rows([path])
    assert e.value.message.splitlines()[0] == f"{path}:2: {message}"


def test_nan_labels_mixed_formats_and_broken_bytes(tmp_path):
    path = rows_file(tmp_path, THUMB, b'{"prompt": "Hi", "completion": "Hello", "label": NaN}', PAIR,
                     {**PAIR, "chosen": "plain text"}, raw=b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(PersonaError) as e:
        check_rows([path])
    assert e.value.message.splitlines() == [
        f"{path}:2: prompt is text where the rows before have messages (first at {path}:1): one format per dataset",
        f"{path}:2: completion is text where the rows before have messages (first at {path}:1): one format per dataset",
        f"{path}:2: label must be true or false, got NaN",
        f"{path}:3: a pairs row among thumbs rows (first at {path}:1): one format per dataset",
        f"{path}:4: a pairs row among thumbs rows (first at {path}:1): one format per dataset",
        f"{path}:4: chosen is text where the rows before have messages (first at {path}:3): one format per dataset",
        f"{path}:5: not valid UTF-8 (byte 0xe9)"]


def test_many_bad_rows_stop_at_twenty(tmp_path):
    path = rows_file(tmp_path, *[{**PAIR, "chosen": ""}] * 100)
    with pytest.raises(PersonaError) as e:
        check_rows([path])
    assert len(e.value.message.splitlines()) == 20 and e.value.message.endswith("(and more; showing the first 20)")


def test_cli_train_on_bad_rows_and_on_a_run_without_pairs(tmp_path):
    path = rows_file(tmp_path, PAIR, {**THUMB, "label": 5})
    done = subprocess.run([sys.executable, "-m", "persona", "train", str(path), "--method", "kto"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: {path}:2: a thumbs row among pairs rows")
    run = tmp_path / "run"
    (run / "datasets" / "dpo").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"format": 1, "identity": "aster"}))
    (run / "datasets" / "build.json").write_text("{}")
    (run / "datasets" / "dpo" / "train.jsonl").write_text("")
    done = subprocess.run([sys.executable, "-m", "persona", "train", str(run), "--method", "dpo"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr and done.stderr.startswith("error: ")


def test_a_reader_never_changes_a_store_being_written(tmp_path):
    store = JsonlStore(tmp_path / "prompts.jsonl")
    store.append([{"id": str(i)} for i in range(49)])
    with open(store.path, "ab") as f:
        f.write(b'{"id": "49", "text": "half wri')  # a writer mid-line
    before = store.path.read_bytes()
    assert len(store.load()) == 49 and store.path.read_bytes() == before  # read-only: nothing cut
    from persona.stats import run_stats  # persona stats is a reader

    (tmp_path / "run.json").write_text(json.dumps({"format": 1, "identity": "aster"}))
    assert sum(run_stats(tmp_path)["prompts"].values()) == 0  # records without a split count in none
    assert store.path.read_bytes() == before
    assert len(store.load(repair=True)) == 49 and store.path.read_bytes().endswith(b"}\n")  # the writer repairs


def test_a_corrupt_line_hint_keeps_paid_work(tmp_path):
    store = JsonlStore(tmp_path / "responses.jsonl")
    store.path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(PersonaError) as e:
        store.load()
    assert e.value.message.startswith(f"{store.path}:2: not a valid JSON record")
    assert "delete" not in e.value.hint and "keep a copy" in e.value.hint
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(PersonaError) as e:
        RunFolder(tmp_path).info()
    assert "delete" not in e.value.hint


def test_two_writers_on_one_run_folder(tmp_path):
    """A second process that writes to a run folder being written gets a message naming the first."""
    run = RunFolder(tmp_path / "run")
    with run.lock():
        code = ("import sys; from persona.run import RunFolder; from persona.errors import PersonaError\n"
                f"try:\n    RunFolder({str(run.path)!r}).lock().__enter__()\n"
                "except PersonaError as e:\n    print(e.message); print(e.hint); sys.exit(3)\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert done.returncode == 3
        assert done.stdout.startswith(f"{run.path} is in use by another persona process (pid {os.getpid()}, ")
        with run.lock():  # the same process may nest
            pass
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0  # released


def test_cli_generate_refuses_a_run_folder_in_use(tmp_path):
    from typer.testing import CliRunner

    from persona.cli import app

    run = RunFolder(tmp_path / "run")
    with run.lock():
        code = ("from persona.cli import main; import sys; sys.argv = ['persona', 'generate', 'identities/aster.yaml', "
                f"'-b', 'fake', '--limit', '2', '--out', {str(run.path)!r}, '--judge', 'none']; main()")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"error: {run.path} is in use by another persona process" in done.stderr
    assert not run.store("responses").path.exists()  # nothing written twice
    assert CliRunner().invoke(app, ["stats", str(run.path)]).exit_code == 1  # no run.json yet: a clean error


def test_atomic_writes_use_their_own_temporary_files(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(str(src))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    write_atomic(tmp_path / "run.json", "{}")
    write_atomic(tmp_path / "run.json", "{}")
    assert len(set(seen)) == 2 and all(f".{os.getpid()}." in name for name in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]  # no temporary file left behind


@pytest.mark.parametrize("bad", ["[1, 2]", "{broken", '{"rows": [{"name": 1}]}'])
def test_report_on_malformed_files_says_which(tmp_path, bad):
    from typer.testing import CliRunner

    from persona.cli import app

    (tmp_path / "run.json").write_text(json.dumps({"format": 1, "identity": "aster", "spec_path": "identities/aster.yaml"}))
    out = tmp_path / "train-dpo"
    (out / "eval").mkdir(parents=True)
    (out / "persona_train.yaml").write_text("method: dpo\n")
    (out / "metrics.json").write_text("[]")
    (out / "eval" / "metrics.json").write_text(bad)
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.startswith(f"error: {out / 'eval' / 'metrics.json'}")
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "build.json").write_text("[]")
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1 and result.stderr.startswith("error: ")


@pytest.mark.parametrize("item,shown", [("sk-proj-abcdefghijklmnopqrstuvwxyz123456", "'***'"),
                                        ("http://user:hunter2secret@host/v1", "'http://host/v1'")])
def test_a_malformed_option_never_echoes_a_secret(item, shown):
    from typer.testing import CliRunner

    from persona.cli import app

    result = CliRunner().invoke(app, ["generate", "identities/brand.yaml", "--dry-run", "-o", item])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"error: --backend-option {shown} is not KEY=VALUE" in result.stderr
    assert "hunter2secret" not in result.output and "abcdefghijklmnop" not in result.output
