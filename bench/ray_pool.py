"""The hf backend in this process against the same backend through a Ray cluster on the same cores: one
replica holding every core, and two replicas of one core each (issue 24's target: one replica >= 0.9x the
in-process rate). One local head node is started for the run and stopped after it.

    .venv/bin/python bench/ray_pool.py [--prompts 128] [--max-tokens 48]

Each row answers the same prompts (sampling, the embedded model, fp32) after a warm-up; tokens/s counts
completion tokens. Run it on a quiet machine: the ratios are what carries over between machines.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()

    from hf_batching import QUESTIONS
    from persona.backends import Request, SamplingParams, load_backend

    cores = os.cpu_count() or 2
    chats = [({"role": "system", "content": "You are Aster, a helpful assistant made by Lumen Labs."},
              {"role": "user", "content": f"{QUESTIONS[i % len(QUESTIONS)]} ({i})"}) for i in range(args.prompts)]
    params = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=args.max_tokens, seed=0)
    requests = [Request(f"bench-{i}", chat, params) for i, chat in enumerate(chats)]
    options = {"dtype": "float32", "batch_size": 32}

    def timed(backend) -> tuple[float, int]:
        list(backend.complete(requests[:8]))  # warm-up
        started = time.perf_counter()
        tokens = sum(c.completion_tokens for r in backend.complete(requests) for c in r.completions)
        return time.perf_counter() - started, tokens

    rows = []
    import torch

    torch.set_num_threads(cores)
    local = load_backend("hf", **options)
    rows.append(("in process (hf)", 1, cores, *timed(local)))
    local.close()
    del local

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    ray = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen([ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                             "--num-cpus", str(cores), "--temp-dir", temp, "--include-dashboard", "false",
                             "--disable-usage-stats", "--block"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert time.monotonic() < deadline, "the Ray head did not start"
            time.sleep(0.5)
        time.sleep(3)  # its raylet registers after the port opens
        for replicas in (1, 2):
            backend = load_backend("ray", backend="hf", options=options, address=f"127.0.0.1:{port}",
                                   replicas=replicas, num_cpus=cores // replicas, shard_size=32)
            rows.append((f"ray, {replicas} replica{'s' * (replicas > 1)}", replicas, cores // replicas,
                         *timed(backend)))
            backend.close()
    finally:
        os.killpg(head.pid, 15)
        head.wait(timeout=60)

    print(f"{platform.processor() or platform.machine()}, {cores} cores, {args.prompts} prompts x "
          f"{args.max_tokens} tokens, hf fp32, embedded model")
    print(f"| {'run':<18} | replicas | cores each | seconds | tokens | tokens/s | x in process |")
    print("|" + "|".join("-" * w for w in (20, 10, 12, 9, 8, 10, 14)) + "|")
    base = rows[0][4] / rows[0][3]
    for name, replicas, each, seconds, tokens in rows:
        rate = tokens / seconds
        print(f"| {name:<18} | {replicas:>8} | {each:>10} | {seconds:>7.1f} | {tokens:>6} | {rate:>8.1f} | "
              f"{rate / base:>11.2f}x |")


if __name__ == "__main__":
    main()
