"""How long `persona --help` and `persona validate` take to start, next to a bare Python start-up.

    .venv/bin/python bench/cli_startup.py [--runs 15]

Prints a table of median wall times and the ratio to `python -c pass`, all measured in one run (the CPU
is shared and noisy: compare the ratios, not the seconds). Target: `persona --help` under 1 s and no
torch import (tests/test_cli.py asserts the latter).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "persona --help": [sys.executable, "-m", "persona", "--help"],
    "persona validate identities/": [sys.executable, "-m", "persona", "validate", "identities/"],
    "persona render brand.yaml": [sys.executable, "-m", "persona", "render", "identities/brand.yaml"],
}


def median_seconds(command: list[str], runs: int) -> float | None:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            return None
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    results = {name: median_seconds(cmd, args.runs) for name, cmd in COMMANDS.items()}
    base = results["python -c pass"]
    print(f"{'command':<32} {'median s':>9} {'x python':>9}")
    for name, seconds in results.items():
        if seconds is None:
            print(f"{name:<32} {'n/a':>9} {'':>9}")
        else:
            print(f"{name:<32} {seconds:>9.3f} {seconds / base:>9.1f}")


if __name__ == "__main__":
    main()
