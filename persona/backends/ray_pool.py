"""The `ray` backend: any other backend, replicated over a Ray cluster (`persona generate ... --ray ADDRESS`).

    backend = RayBackend(backend="hf", options={"batch_size": 16}, address="127.0.0.1:6379", replicas=2)

Each replica is a Ray actor holding one copy of the backend (hf on a CPU node, vllm on a GPU). Requests go
out in shards of `shard_size` (64 for hf, 256 for vllm, else 8), at most two in flight per replica, and each
shard's results come back to this process as soon as it finishes, so the caller saves them at once (the
run's resumable store lives here, in the driver, never on the workers). A replica that dies (its node
lost, its process killed) loses only its shards in flight: they are sent to the replicas still alive, and
the run fails only when none is left. Records name the inner backend, so ids and records are those of a
single-process run.

Every node needs persona and the inner backend's dependencies installed (pip install 'persona-tune[ray,
train]'); a cluster without them fails at the first replica, with that message.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Iterator, Sequence

from persona.backends import Request, Result
from persona.errors import PersonaError

log = logging.getLogger("persona")

CONNECT_TIMEOUT_S = 5.0
IN_FLIGHT_PER_REPLICA = 2
# requests per shard: a batching backend needs whole batches to keep its speed (hf at batch 8 makes less
# than half the tokens/s of batch 64 on these CPUs); a shard is also what a dead replica loses
SHARD_SIZE = {"hf": 64, "vllm": 256}


class RayBackend:
    local = False  # the model runs on the cluster's workers
    default_model = None

    def __init__(self, backend: str = "hf", options: dict | None = None, address: str = "auto",
                 replicas: int | None = None, shard_size: int | None = None, num_cpus: float = 1.0,
                 num_gpus: float = 0.0):
        import ray

        if backend == "ray":
            raise PersonaError("the ray backend cannot replicate itself", hint="name the backend to replicate")
        self.inner, self.options = backend, dict(options or {})
        self.address = str(address)
        self.shard_size = max(1, int(shard_size or SHARD_SIZE.get(backend, 8)))
        self.name = backend  # records name the backend that generated, as in a single-process run
        _check_reachable(self.address)
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
            except ConnectionError as e:
                raise PersonaError(f"cannot connect to the Ray cluster at {self.address}: {e}",
                                   hint="start one with `ray start --head --port 6379`, or check --ray") from None
        resources = ray.cluster_resources()  # one replica per CPU (per GPU with num_gpus) unless told
        fits = resources.get("GPU", 0) / num_gpus if num_gpus else resources.get("CPU", 0) / max(num_cpus, 1e-9)
        self.replicas = int(replicas or max(1, int(fits)))
        actor = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=0)(Replica)
        self._actors = [actor.remote(backend, self.options) for _ in range(self.replicas)]
        try:  # the first call on each replica loads its backend: a node without it fails here
            described = ray.get([a.describe.remote() for a in self._actors])
        except Exception as e:  # RayActorError / RayTaskError wrap what the worker raised
            raise PersonaError(f"the Ray workers cannot run backend '{backend}': {_cause(e)}",
                               hint=f"install persona and its extra on every node: pip install "
                                    f"'persona-tune[ray,{_extra(backend)}]'") from None
        self.model = described[0]["model"]
        self.pids = [d["pid"] for d in described]  # worker processes (for tests and `ray` debugging)
        log.info("ray: %d replicas of %s (%s) on %s", self.replicas, backend, self.model, self.address)

    def close(self) -> None:
        import ray

        for actor in self._actors:
            ray.kill(actor)
        self._actors = []

    def complete(self, requests: Sequence[Request]) -> Iterator[Result]:
        import ray

        shards = [list(requests[i:i + self.shard_size]) for i in range(0, len(requests), self.shard_size)]
        pending = list(reversed(shards))  # popped from the end: shard order
        alive = list(self._actors)
        running: dict = {}  # object ref -> (actor, shard)
        lost = 0
        while pending or running:
            for actor in alive:
                while pending and sum(a is actor for a, _ in running.values()) < IN_FLIGHT_PER_REPLICA:
                    shard = pending.pop()
                    running[actor.complete.remote(shard)] = (actor, shard)
            if not running:
                break
            [ready], _ = ray.wait(list(running), num_returns=1)
            actor, shard = running.pop(ready)
            try:
                results = ray.get(ready)
            except ray.exceptions.RayActorError as e:  # the replica died: its shards go to the others
                if actor in alive:
                    alive.remove(actor)
                    lost += 1
                    log.warning("ray: a replica of %s died (%s); %d left, its requests in flight are sent again",
                                self.inner, _cause(e), len(alive))
                pending.append(shard)
                if not alive:
                    raise PersonaError(f"every Ray replica of {self.inner} died ({lost} lost)",
                                       hint="the results so far are saved: run the same command again") from None
                continue
            except ray.exceptions.RayTaskError as e:  # the backend itself failed: as without Ray
                cause = e.as_instanceof_cause() if hasattr(e, "as_instanceof_cause") else e
                if isinstance(cause, PersonaError):
                    raise PersonaError(cause.message, hint=cause.hint) from None
                raise PersonaError(f"backend {self.inner} failed on a Ray worker: {_cause(e)}",
                                   hint="its traceback is in the worker's log (ray logs)") from None
            yield from results
        self._actors = alive


class Replica:
    """One copy of a backend in a Ray worker process."""

    def __init__(self, backend: str, options: dict):
        from persona.backends import load_backend

        self.backend = load_backend(backend, **options)

    def describe(self) -> dict:
        return {"model": self.backend.model, "pid": os.getpid()}

    def complete(self, requests: list[Request]) -> list[Result]:
        return list(self.backend.complete(requests))


def _check_reachable(address: str) -> None:
    """Fail within seconds, not Ray's minute of retries, when nothing listens at host:port."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except ValueError:
        raise PersonaError(f"--ray {address!r} is not HOST:PORT", hint="e.g. --ray 127.0.0.1:6379") from None
    except OSError as e:
        raise PersonaError(f"cannot reach the Ray cluster at {address} ({e.strerror or e})",
                           hint="start one with `ray start --head --port 6379`, or check the address") from None


def _cause(error: Exception) -> str:
    text = " ".join(str(error).split())
    for marker in ("ModuleNotFoundError:", "ImportError:", "PersonaError:", "Error:"):
        if marker in text:
            text = text[text.rindex(marker):]
            break
    return text[:300]


def _extra(backend: str) -> str:
    from persona.backends import EXTRAS

    return EXTRAS.get(backend, "train")
