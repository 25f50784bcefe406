"""Resuming `persona generate`: a finished job re-run makes 0 backend calls, and a run killed about half
way (SIGKILL, no clean-up) and restarted ends with exactly the records of an uninterrupted run.

    .venv/bin/python bench/resume.py [--limit 30] [--delay 0.02]

Runs the real CLI in subprocesses with the deterministic fake backend (-b fake -o delay=...), so the
comparison is exact: same record ids, same texts, no duplicates. Prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def persona(out: Path, limit: int, delay: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "persona", "generate", "identities/brand.yaml", "-b", "fake",
                             "-o", f"delay={delay}", "--limit", str(limit), "--out", str(out)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"})


def finish(process: subprocess.Popen) -> tuple[int, str]:
    _, err = process.communicate(timeout=600)
    if process.returncode != 0:
        raise SystemExit(f"persona failed:\n{err}")
    return int(re.search(r"(\d+) backend requests", err).group(1)), err


def records(out: Path) -> list[tuple[str, str]]:
    return [(r["id"], r["text"]) for r in map(json.loads, (out / "responses.jsonl").read_text().splitlines())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--delay", type=float, default=0.02)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clean, killed = Path(tmp) / "clean", Path(tmp) / "killed"
        first, _ = finish(persona(clean, args.limit, args.delay))
        again, _ = finish(persona(clean, args.limit, args.delay))
        expected = records(clean)

        process = persona(killed, args.limit, args.delay)
        responses = killed / "responses.jsonl"
        while True:  # kill it once about half the responses are on disk
            if responses.exists() and len(responses.read_bytes().splitlines()) >= len(expected) // 2:
                break
            if process.poll() is not None:
                raise SystemExit("the run finished before it could be killed; raise --delay")
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait()
        kept = len(responses.read_bytes().splitlines())
        resumed, _ = finish(persona(killed, args.limit, args.delay))
        final = records(killed)

    print(f"{'run':<34} {'backend requests':>17} {'records':>8}")
    print(f"{'uninterrupted':<34} {first:>17} {len(expected):>8}")
    print(f"{'same job again':<34} {again:>17} {len(expected):>8}")
    print(f"{'killed at ~half (SIGKILL)':<34} {'':>17} {kept:>8}")
    print(f"{'restarted':<34} {resumed:>17} {len(final):>8}")
    same = sorted(final) == sorted(expected)
    duplicates = len(final) - len({i for i, _ in final})
    print(f"restarted run == uninterrupted run: {same}; duplicate ids: {duplicates}")
    if again != 0 or not same or duplicates:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
