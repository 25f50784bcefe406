"""The built-in templates, schema and example identities work from an installed wheel, not only from a
checkout: build the wheel, install it into a bare folder, and run persona from somewhere else."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(out), str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    wheel = next(out.glob("persona_tune-*.whl"))
    site = out / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    return wheel, site


def run_installed(site, cwd, *args):
    # PYTHONPATH puts the installed copy ahead of the editable checkout on sys.path.
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "persona", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=60)


def test_wheel_contains_builtins(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"persona/identity.schema.json", "persona/_builtin/identities/brand.yaml",
                "persona/_builtin/identities/components/bank-compliance.yaml"}
    expected |= {f"persona/_builtin/templates/{p.name}" for p in (REPO / "templates").glob("*.j2")}
    assert expected <= names
    assert not any(n.startswith(("tests/", ".venv/")) for n in names)


def test_installed_package_renders_and_validates_outside_the_checkout(installed, tmp_path):
    _, site = installed
    where = subprocess.run([sys.executable, "-c", "import persona; print(persona.__file__)"], capture_output=True,
                           text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)})
    assert where.stdout.startswith(str(site)), where.stdout

    listing = run_installed(site, tmp_path, "ls")
    assert listing.returncode == 0, listing.stderr
    assert "brand.yaml" in listing.stdout and "[built-in]" in listing.stdout
    assert str(site / "persona/_builtin/templates/judge.j2") in listing.stdout

    brand = site / "persona/_builtin/identities/brand.yaml"
    assert run_installed(site, tmp_path, "validate", str(brand.parent)).returncode == 0
    rendered = run_installed(site, tmp_path, "render", str(brand), "-t", "violating", "--target", "warm")
    assert rendered.returncode == 0, rendered.stderr
    assert 'break this trait ("warm")' in rendered.stdout

    schema = run_installed(site, tmp_path, "schema")
    assert '"title": "persona identity spec"' in schema.stdout

    init = run_installed(site, tmp_path, "init", "shop")
    assert init.returncode == 0, init.stderr
    assert (tmp_path / "templates/judge.j2").read_text() == (REPO / "templates/judge.j2").read_text()
    assert run_installed(site, tmp_path, "validate", "identities/").returncode == 0
