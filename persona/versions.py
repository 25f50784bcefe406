"""Installed versions that are known to break persona, named at start-up instead of deep inside a trainer.

    known_breaks()                   # [] in the locked environment (requirements/main.txt)
    check_versions()                 # PersonaError naming each one, with the install command
    check_versions(("typer",))       # only these packages' rows (the CLI checks typer before it builds itself)

The tested versions are the lock files' (requirements/main.txt, requirements/vllm.txt; `make lock` refreshes
them and runs the suite). An environment that differs from the lock still runs: only the versions below, each
seen to fail here, are refused. Every row says what breaks, so a user knows why. pyproject.toml's lower bounds
exclude them too; the rows are for environments installed by hand or by another project's resolver.

Reading versions costs a few milliseconds (importlib.metadata, no imports of the packages themselves), so
`persona --help` stays fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from persona.errors import PersonaError


@dataclass(frozen=True)
class Break:
    package: str  # the distribution whose version breaks persona
    below: str  # versions lower than this break it
    what: str  # what breaks, as a user sees it
    unless_below: tuple[str, str] | None = None  # (package, version): only together with this package at or above it


# Each row was seen to fail on these machines (December 2026), in a fresh environment with the older version.
KNOWN_BREAKS = (
    Break("typer", "0.16", "cannot build persona's command line with click 8.2 or newer (TypeError: 'Secondary "
          "flag is not valid for non-boolean flag')", unless_below=("click", "8.2")),
    Break("transformers", "5.2", "has no TrainingArguments.train_sampling_strategy, which persona's SFT settings "
          "use (batches of like lengths)"),
    Break("peft", "0.18", "imports HybridCache, which transformers 5 no longer has: LoRA training and loading fail",
          unless_below=("transformers", "5.0")),
    Break("gguf", "0.17.1", "imports sentencepiece, which it does not declare: the embedded default model does not "
          "load"),
)
LOCKED = "(or, in a checkout of persona, `make install`: the tested versions from the lock)"


def release(version: str) -> tuple[int, ...]:
    """(5, 25, 0) of '5.25.0', '5.25.0+cpu' or '5.25.0rc1': the numeric release, enough for 'lower than' rows."""
    numbers = re.match(r"\d+(?:\.\d+)*", version.strip())
    return tuple(int(n) for n in numbers.group().split(".")) if numbers else ()


def _lower(version: str, than: str) -> bool:
    have, bound = release(version), release(than)
    width = max(len(have), len(bound))
    return have + (0,) * (width - len(have)) < bound + (0,) * (width - len(bound))


def installed(package: str) -> str | None:
    import importlib.metadata as metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def known_breaks(packages: tuple[str, ...] | None = None, versions=installed) -> list[tuple[Break, str]]:
    """The rows of KNOWN_BREAKS (of `packages`, default all) that the installed versions hit, each with the
    installed version. `versions(package)` gives an installed version or None (tests pass their own)."""
    hits = []
    for row in KNOWN_BREAKS:
        if packages is not None and row.package not in packages:
            continue
        version = versions(row.package)
        if version is None or not _lower(version, row.below):
            continue
        if row.unless_below:
            other = versions(row.unless_below[0])
            if other is None or _lower(other, row.unless_below[1]):
                continue
        hits.append((row, version))
    return hits


def check_versions(packages: tuple[str, ...] | None = None, versions=installed) -> None:
    """PersonaError naming every known-bad installed version (of `packages`, default all) on one line, with the
    install command."""
    hits = known_breaks(packages, versions)
    if not hits:
        return
    lines = [f"{row.package} {version} is installed: it {row.what}" for row, version in hits]
    raise PersonaError("; ".join(lines),
                       hint="pip install " + " ".join(f"'{row.package}>={row.below}'" for row, _ in hits) + f" {LOCKED}")
