"""Installed versions known to break persona are named at start-up (persona.versions), the locked ones pass,
and pyproject's lower bounds exclude every known-bad version."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest

from conftest import REPO
from persona.errors import PersonaError
from persona.versions import KNOWN_BREAKS, check_versions, known_breaks, release


def versions(**installed):
    return lambda package: installed.get(package.replace("-", "_"))


def test_release_reads_local_labels_and_pre_releases():
    assert release("2.13.0+cpu") == (2, 13, 0) and release("5.2.0rc1") == (5, 2, 0) and release("0.17.1") == (0, 17, 1)


@pytest.mark.parametrize("installed, hit", [
    ({"transformers": "5.1.0"}, ["transformers"]),
    ({"transformers": "5.2.0"}, []),
    ({"transformers": "5.25.0"}, []),
    ({"peft": "0.17.0", "transformers": "5.25.0"}, ["peft"]),
    ({"peft": "0.17.0", "transformers": "4.57.1"}, ["transformers"]),  # that peft is fine with that transformers
    ({"typer": "0.12.0", "click": "8.5.1"}, ["typer"]),
    ({"typer": "0.12.0", "click": "8.1.8"}, []),
    ({"gguf": "0.10.0"}, ["gguf"]),
    ({"gguf": "0.17.1"}, []),
    ({"gguf": "0.17"}, ["gguf"]),  # 0.17 == 0.17.0 < 0.17.1
    ({}, []),  # nothing installed (persona validate in a light CI job): nothing to say
])
def test_known_breaks_are_the_rows_the_versions_hit(installed, hit):
    assert [row.package for row, _ in known_breaks(versions=versions(**installed))] == hit


def test_the_message_names_each_package_and_version_on_one_line_with_the_install_command():
    with pytest.raises(PersonaError) as e:
        check_versions(versions=versions(transformers="5.1.0", gguf="0.10.0"))
    assert e.value.message == (
        "transformers 5.1.0 is installed: it has no TrainingArguments.train_sampling_strategy, which persona's SFT "
        "settings use (batches of like lengths); gguf 0.10.0 is installed: it imports sentencepiece, which it "
        "does not declare: the embedded default model does not load")
    assert e.value.hint.startswith("pip install 'transformers>=5.2' 'gguf>=0.17.1' (or, in a checkout")
    check_versions(("typer",), versions=versions(transformers="5.1.0"))  # only the packages asked about


def test_the_installed_environment_hits_no_known_break():
    assert known_breaks() == []


def test_pyproject_lower_bounds_exclude_every_known_break():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    floors = {}
    for line in lines:
        name, _, rest = line.partition(">=")
        floors[name.split("[")[0].strip()] = rest.split(",")[0].strip()
    for row in KNOWN_BREAKS:
        assert release(floors[row.package]) >= release(row.below), row.package


def _fake_distribution(folder, name, version):
    info = folder / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def _persona(args, site, cwd=REPO):
    """The real console entry point, with `site` ahead of the environment's packages on the path: importlib.metadata
    reads the first distribution it finds, so a fake dist-info there is what persona sees as installed."""
    code = f"import sys\nsys.path.insert(0, {str(site)!r})\nsys.argv = ['persona', *{args!r}]\nfrom persona.cli import main\nmain()\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_a_command_that_loads_models_refuses_a_known_bad_version_before_it_starts(tmp_path):
    _fake_distribution(tmp_path / "site", "gguf", "0.10.0")
    result = _persona(["eval", str(tmp_path / "nowhere")], tmp_path / "site")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: gguf 0.10.0 is installed: it imports sentencepiece, which it does not declare: the embedded default "
        "model does not load",
        "hint: pip install 'gguf>=0.17.1' (or, in a checkout of persona, `make install`: the tested versions from "
        "the lock)"]
    light = _persona(["validate", "identities/aster.yaml"], tmp_path / "site")  # needs no model: runs as before
    assert light.returncode == 0, light.stderr


def test_an_old_typer_is_named_before_the_command_line_is_built(tmp_path):
    _fake_distribution(tmp_path / "site", "typer", "0.12.0")
    result = _persona(["validate", "identities/aster.yaml"], tmp_path / "site")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: typer 0.12.0 is installed: it cannot build persona's command line")
