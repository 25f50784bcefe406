"""Throughput of the `openai` backend against a local OpenAI-compatible server that answers after a fixed delay.

    .venv/bin/python bench/openai_throughput.py [--delay 0.2] [--seconds 10]

The server (tests/openai_server.py) runs in its own process on 127.0.0.1. With the delay fixed, the best
possible rate at concurrency c is c / delay requests per second; the table shows the achieved rate and
its ratio to that ideal (target >= 0.85 at 32 and 64), beside the one-at-a-time baseline.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from persona.backends import Request, SamplingParams, load_backend  # noqa: E402


def measure(base_url: str, concurrency: int, count: int) -> tuple[float, float]:
    """(requests per second, client CPU milliseconds per request)."""
    backend = load_backend("openai", model="bench", base_url=base_url, api_key_env="BENCH_KEY",
                           concurrency=concurrency, max_retries=0)
    requests = [Request(f"r{i}", ({"role": "user", "content": f"question {i}"},), SamplingParams(max_tokens=16))
                for i in range(count)]
    started, cpu = time.perf_counter(), time.process_time()
    done = sum(1 for _ in backend.complete(requests))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert done == count
    return count / elapsed, 1000 * cpu / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--seconds", type=float, default=10.0, help="rough length of each measurement")
    args = parser.parse_args()
    os.environ["BENCH_KEY"] = "bench"
    server = subprocess.Popen([sys.executable, str(REPO / "tests/openai_server.py"), str(args.delay)],
                              stdout=subprocess.PIPE, text=True)
    try:
        base_url = server.stdout.readline().strip()
        print(f"server {base_url}, delay {args.delay * 1000:.0f} ms, {os.cpu_count()} CPUs")
        print(f"{'concurrency':>11} {'requests':>9} {'req/s':>8} {'ideal':>8} {'ratio':>6} {'client cpu ms/req':>18}")
        for concurrency in (1, 32, 64):
            ideal = concurrency / args.delay
            count = max(10, int(ideal * args.seconds))
            measure(base_url, concurrency, min(count, concurrency * 2))  # warm the connection pool
            rate, cpu_ms = measure(base_url, concurrency, count)
            print(f"{concurrency:>11} {count:>9} {rate:>8.1f} {ideal:>8.1f} {rate / ideal:>6.2f} {cpu_ms:>18.2f}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
