"""Shared fixtures. Tests are offline and write only under pytest's tmp_path.

Golden files live in tests/golden/; regenerate them after an intended change with
    PERSONA_UPDATE_GOLDEN=1 make test
and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
GOLDEN = REPO / "tests" / "golden"
SHIPPED_IDENTITIES = sorted((REPO / "identities").glob("*.yaml"))


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    """Every cache and output folder points into a temp dir; no hub access; work from the repo root."""
    home = tmp_path_factory.mktemp("home")
    for var in ("HF_HOME", "XDG_CACHE_HOME", "PERSONA_CACHE"):
        monkeypatch.setenv(var, str(home / var.lower()))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.chdir(REPO)
    yield


@pytest.fixture
def golden():
    """golden(name, text): compare `text` with tests/golden/NAME (or write it when updating)."""

    def check(name: str, text: str) -> None:
        path = GOLDEN / name
        if os.environ.get("PERSONA_UPDATE_GOLDEN"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        assert path.exists(), f"golden file {path} missing; run with PERSONA_UPDATE_GOLDEN=1"
        assert text == path.read_text(encoding="utf-8"), f"output differs from golden file {path}"

    return check
