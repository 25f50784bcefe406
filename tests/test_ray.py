"""persona generate --ray against a real local Ray cluster: a head and a second node on 127.0.0.1, one CPU
each (`ray start`), persona's CLI as the driver in a subprocess. The same records as a single-process run,
a replica killed mid-run, a rerun that asks nothing, and the bad addresses and clusters.

Skipped without ray (pip install 'persona-tune[ray]')."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO, free_port

pytest.importorskip("ray", reason="pip install 'persona-tune[ray]'")
pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="module")
def ray_cluster():
    """HOST:PORT of a two-node cluster (head + worker node, 1 CPU each), stopped afterwards."""
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus", "1", "--block", "--disable-usage-stats"]
    nodes = [subprocess.Popen([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                               "--temp-dir", temp, "--include-dashboard", "false", *common],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)]
    try:
        _wait_for_port(port, 60)
        nodes.append(subprocess.Popen([RAY, "start", "--address", f"127.0.0.1:{port}", "--node-ip-address",
                                       "127.0.0.1", *common], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, env=env, start_new_session=True))
        address = f"127.0.0.1:{port}"
        _wait_for_cpus(address, 2, 60)
        yield address
    finally:
        for node in reversed(nodes):
            with _quiet():
                os.killpg(node.pid, signal.SIGTERM)
        for node in nodes:
            try:
                node.wait(timeout=8)  # `ray start --block` stops its processes on SIGTERM; a slow stop is killed
            except subprocess.TimeoutExpired:
                with _quiet():
                    os.killpg(node.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, kind, *rest):
        return kind is not None and issubclass(kind, ProcessLookupError)


def _wait_for_port(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"ray head did not listen on {port} in {seconds}s")


def _wait_for_cpus(address: str, cpus: int, seconds: float) -> None:
    probe = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
             "print(int(ray.cluster_resources().get('CPU', 0)))")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done = subprocess.run([sys.executable, "-c", probe, address], capture_output=True, text=True, timeout=60)
        if done.stdout.strip() == str(cpus):
            return
        time.sleep(1)
    raise AssertionError(f"the cluster at {address} did not reach {cpus} CPUs in {seconds}s")


def persona(*args: str, wait: bool = True):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    command = [sys.executable, "-m", "persona", *args]
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


GENERATE = ["generate", "identities/aster.yaml", "-b", "fake", "--limit", "8", "--replay", "4", "--judge", "none"]


def records(run: Path) -> list[tuple[str, str, str]]:
    rows = [json.loads(line) for line in (run / "responses.jsonl").read_text().splitlines()]
    return sorted((r["id"], r["backend"], r["text"]) for r in rows)


def test_the_same_records_as_one_process(ray_cluster, tmp_path):
    alone = persona(*GENERATE, "--out", str(tmp_path / "alone"))
    assert alone.returncode == 0, alone.stderr
    spread = persona(*GENERATE, "--out", str(tmp_path / "ray"), "--ray", ray_cluster, "--ray-replicas", "2")
    assert spread.returncode == 0, spread.stderr[-3000:]
    assert records(tmp_path / "ray") == records(tmp_path / "alone")
    assert (tmp_path / "ray" / "prompts.jsonl").read_text() == (tmp_path / "alone" / "prompts.jsonl").read_text()
    again = persona(*GENERATE, "--out", str(tmp_path / "ray"), "--ray", ray_cluster, "--ray-replicas", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert ": 0 backend requests" in again.stderr


def test_a_killed_replica_loses_only_its_requests_in_flight(ray_cluster, tmp_path):
    # enough requests (76 in the responses stage, shards of 8, 0.1 s each) that both replicas still hold shards
    # in flight when one is killed after the first 8 responses: a replica with nothing in flight (35 requests
    # at 0.05 s could all be done by then) dies unnoticed, and the test saw nothing to resend
    longer = ["generate", "identities/aster.yaml", "-b", "fake", "--limit", "24", "--replay", "4", "--judge", "none"]
    expected = persona(*longer, "--out", str(tmp_path / "alone"))
    assert expected.returncode == 0, expected.stderr
    run = tmp_path / "ray"
    driver = persona(*longer, "--out", str(run), "--ray", ray_cluster, "--ray-replicas", "2", "-o", "delay=0.1",
                     wait=False)
    try:
        deadline = time.monotonic() + 120
        while not (run / "responses.jsonl").is_file() or len((run / "responses.jsonl").read_text().splitlines()) < 8:
            assert driver.poll() is None, driver.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no responses within 120 s"
            time.sleep(0.1)
        pids = subprocess.run(["pgrep", "-f", "ray::Replica"], capture_output=True, text=True).stdout.split()
        assert len(pids) == 2, pids
        os.kill(int(pids[0]), signal.SIGKILL)
        _, stderr = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, stderr[-3000:]
    assert "a replica of fake died" in stderr and "1 left" in stderr
    ids = [json.loads(line)["id"] for line in (run / "responses.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids))  # nothing twice
    assert records(run) == records(tmp_path / "alone")  # nothing lost
    again = persona(*longer, "--out", str(run), "--ray", ray_cluster)
    assert again.returncode == 0 and ": 0 backend requests" in again.stderr


def test_an_unreachable_cluster_fails_fast_and_clearly(tmp_path):
    started = time.monotonic()
    done = persona(*GENERATE, "--out", str(tmp_path / "run"), "--ray", f"127.0.0.1:{free_port()}")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "cannot reach the Ray cluster at 127.0.0.1:" in done.stderr and "ray start --head" in done.stderr
    assert time.monotonic() - started < 60
    bad = persona(*GENERATE, "--out", str(tmp_path / "run"), "--ray", "nowhere")
    assert bad.returncode != 0 and "--ray 'nowhere' is not HOST:PORT" in bad.stderr


def test_a_cluster_without_the_backend_s_dependencies_says_what_to_install(ray_cluster, tmp_path):
    # vllm is not installed in this environment, so not on the cluster's workers either
    done = persona("generate", "identities/aster.yaml", "-b", "vllm", "--limit", "2", "--judge", "none",
                   "--out", str(tmp_path / "run"), "--ray", ray_cluster, "--ray-replicas", "1")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "the Ray workers cannot run backend 'vllm'" in done.stderr
    assert "pip install 'persona-tune[ray,vllm]'" in done.stderr


def test_the_llm_judge_runs_on_the_cluster_too(ray_cluster, tmp_path):
    # the fake judge model's replies are no verdicts: every response ends unjudged, its raw reply kept, and
    # the build then stops (nothing to train on) - after the judgements are saved
    judged = [*GENERATE[:-2], "--judge", "llm", "--judge-backend", "fake"]
    alone = persona(*judged, "--out", str(tmp_path / "alone"))
    assert "nothing to train on" in alone.stderr, alone.stderr[-3000:]
    responses = persona(*GENERATE, "--out", str(tmp_path / "ray"), "--ray", ray_cluster)
    assert responses.returncode == 0, responses.stderr[-3000:]
    # every response exists, so only the judge loads a backend: through --ray, which is unreachable here
    nowhere = persona(*judged, "--out", str(tmp_path / "ray"), "--ray", f"127.0.0.1:{free_port()}")
    assert "cannot reach the Ray cluster" in nowhere.stderr, nowhere.stderr[-3000:]
    spread = persona(*judged, "--out", str(tmp_path / "ray"), "--ray", ray_cluster, "--ray-replicas", "2")
    assert "nothing to train on" in spread.stderr, spread.stderr[-3000:]

    def judgements(run):
        rows = [json.loads(line) for line in (tmp_path / run / "judgements.jsonl").read_text().splitlines()]
        return sorted((r["response_id"], r["status"], r["raw"]) for r in rows)

    assert judgements("ray") == judgements("alone") and len(judgements("ray")) > 0


def test_refine_samples_on_the_cluster(ray_cluster, tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from persona.cli import app

    runner, run = CliRunner(), tmp_path / "run"
    fast = ["--set", "max_steps=2", "--set", "per_device_train_batch_size=2", "--set", "max_length=64",
            "--set", "save_strategy=no", "--set", "r=4"]
    made = runner.invoke(app, ["generate", "identities/aster.yaml", "-b", "fake", "--limit", "12", "--replay", "0",
                               "--out", str(run)])
    assert made.exit_code == 0, made.stderr
    trained = runner.invoke(app, ["train", str(run), "--method", "sft", "-m", str(tiny_model_dir), *fast])
    assert trained.exit_code == 0, trained.stderr
    refine = ["refine", str(run / "train-sft"), "-k", "2", "--max-tokens", "6", "--limit", "2", "--output-dir",
              str(tmp_path / "round"), *fast]
    done = persona(*refine, "--ray", ray_cluster, "--ray-replicas", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    samples = [json.loads(line) for line in (tmp_path / "round/round-1/samples.jsonl").read_text().splitlines()]
    assert samples and {s["backend"] for s in samples} == {"hf"}
    assert list((tmp_path / "round/round-1").glob("merged-*/config.json"))  # the folder the workers loaded
    again = persona(*refine)  # the same round without the cluster: nothing is sampled again
    assert again.returncode == 0, again.stderr[-3000:]
    after = (tmp_path / "round/round-1/samples.jsonl").read_text().splitlines()
    assert len(after) == len(samples)
