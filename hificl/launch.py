"""Where runs execute: in this process, in a pool of local processes, or as tasks on a Ray cluster.

`hificl ablate` and `hificl tune` hand a runner jobs (a key, a picklable payload, the resources the run asks
for) and one module-level function; the runner yields (key, result) as jobs finish, in completion order. Workers
never write the results store: the caller (the driver) writes each result as it arrives, so a store on a
cluster has one writer, and a driver killed at any moment loses only the runs still in flight, which a
re-run submits again.

A failed job does not stop the others: every job runs, then the first failure is raised (after the driver has
stored every result that did arrive), so one bad cell never throws away a night of finished runs.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from hificl.errors import ConfigError

P = TypeVar("P")
R = TypeVar("R")
LAUNCHERS = ("local", "ray")


@dataclass(frozen=True)
class Resources:
    """What one run needs. gpus=None: the run's devices when the cluster has GPUs, else none (`accelerator: auto`)."""

    cpus: float = 1.0
    gpus: float | None = 0.0
    devices: int = 1


@dataclass(frozen=True)
class Job(Generic[P]):
    key: str
    payload: P
    resources: Resources = field(default_factory=Resources)


class Runner(Protocol):
    """Runs fn(job.payload) for every job; yields (job.key, result) as jobs finish."""

    def run(self, fn: Callable[[P], R], jobs: Sequence[Job[P]]) -> Iterator[tuple[str, R]]: ...


def resources_for(train: Any, cpus: float = 1.0) -> Resources:
    """A run's resources from its `train` config (accelerator, devices, strategy).

    Refuses a multi-device run with Lightning's `ddp` launcher: it re-executes the command line, which inside a
    pool or Ray worker is the worker's, not `hificl`'s (docs/scaling.md: use `ddp_spawn`)."""
    devices = _device_count(train.devices)
    if devices > 1 and str(train.strategy) in ("auto", "ddp"):
        raise ConfigError(
            f"train.devices={train.devices} with train.strategy={train.strategy} cannot run inside a launcher "
            "worker (Lightning's ddp re-executes the command line); set train.strategy=ddp_spawn."
        )
    accelerator = str(train.accelerator)
    if accelerator in ("gpu", "cuda"):
        return Resources(cpus=cpus, gpus=float(devices), devices=devices)
    if accelerator == "auto":
        return Resources(cpus=cpus, gpus=None, devices=devices)
    return Resources(cpus=cpus, gpus=0.0, devices=devices)


def _device_count(devices: int | str) -> int:
    """`2` -> 2, `"0,1"` -> 2, `"auto"` / `-1` -> 1 (a scheduler must reserve a number: one device per run)."""
    if isinstance(devices, int):
        return max(1, devices)
    text = str(devices).strip()
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    return max(1, int(text)) if text.lstrip("-").isdigit() else 1


def _threads(cpus: float) -> str:
    return str(max(1, int(cpus)))


class LocalRunner:
    """This process (workers=1, or one job), else a pool of `workers` spawned processes on this machine.

    'spawn': a fresh interpreter per worker, safe with CUDA and SQLite connections (fork copies both). A worker
    that dies (killed, out of memory) fails its job instead of hanging the pool."""

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}.")
        self.workers = workers

    def run(self, fn: Callable[[P], R], jobs: Sequence[Job[P]]) -> Iterator[tuple[str, R]]:
        if self.workers == 1 or len(jobs) <= 1:
            yield from _in_process(fn, jobs)
            return
        errors: list[tuple[str, BaseException]] = []
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=min(self.workers, len(jobs)), mp_context=context)
        try:
            pending: dict[Future[R], str] = {pool.submit(_pooled, fn, job.payload): job.key for job in jobs}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    key = pending.pop(future)
                    error = future.exception()
                    if error is None:
                        yield key, future.result()
                    else:
                        errors.append((key, error))
        finally:  # stopped early (Ctrl-C, the caller failed): queued jobs never start
            pool.shutdown(wait=True, cancel_futures=True)
        _raise_first(errors)


def _pooled(fn: Callable[[P], R], payload: P) -> R:
    os.environ.setdefault("HIFICL_THREADS", "1")
    return fn(payload)


def _in_process(fn: Callable[[P], R], jobs: Sequence[Job[P]]) -> Iterator[tuple[str, R]]:
    errors: list[tuple[str, BaseException]] = []
    for job in jobs:
        try:
            result = fn(job.payload)
        except Exception as err:
            errors.append((job.key, err))
            continue
        yield job.key, result
    _raise_first(errors)


def _raise_first(errors: list[tuple[str, BaseException]]) -> None:
    if not errors:
        return
    for key, error in errors[1:]:
        print(f"hificl: run {key} failed too: {type(error).__name__}: {error}", file=sys.stderr)
    if len(errors) > 1:
        print(f"hificl: {len(errors)} runs failed; the first error follows.", file=sys.stderr)
    raise errors[0][1]


class RayRunner:
    """Each job a Ray task with the CPUs/GPUs its run asks for, on the cluster at `address`.

    address: `auto` (the cluster this machine belongs to), `HOST:PORT` of a head node, `ray://HOST:10001`
    (Ray Client), or None (RAY_ADDRESS if set, else a fresh single-machine Ray). Tasks run in the driver's
    working directory, so relative paths (model, data, Optuna storage) mean the same on every node of a cluster
    that shares its file system. A task on a node that dies is retried elsewhere (Ray's `max_retries`); when
    the driver dies, Ray ends its tasks, and the next `hificl ablate` submits the unfinished runs again.
    """

    def __init__(self, address: str | None = None, init_options: dict[str, Any] | None = None) -> None:
        self.address = address
        self.init_options = init_options or {}
        self.placements: dict[str, str] = {}  # job key -> id of the node it ran on

    def run(self, fn: Callable[[P], R], jobs: Sequence[Job[P]]) -> Iterator[tuple[str, R]]:
        ray = import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=self.address, **self.init_options)
        try:
            yield from self._run(ray, fn, jobs)
        finally:
            if started_here:
                ray.shutdown()

    def _run(self, ray: Any, fn: Callable[[P], R], jobs: Sequence[Job[P]]) -> Iterator[tuple[str, R]]:
        cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
        task = ray.remote(_ray_task)
        pending: dict[Any, str] = {}
        for job in jobs:
            gpus = job.resources.gpus
            if gpus is None:
                gpus = float(job.resources.devices) if cluster_gpus > 0 else 0.0
            options = {"num_cpus": job.resources.cpus, "num_gpus": gpus, "name": f"hificl:{job.key}"}
            ref = task.options(**options).remote(fn, job.payload, os.getcwd(), _threads(job.resources.cpus))
            pending[ref] = job.key
        errors: list[tuple[str, BaseException]] = []
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    key = pending.pop(ref)
                    try:
                        node, result = ray.get(ref)
                    except Exception as err:  # RayTaskError subclasses the task's own exception class
                        errors.append((key, err))
                        continue
                    self.placements[key] = node
                    yield key, result
        finally:
            for ref in pending:  # the driver is stopping early: do not leave its runs occupying the cluster
                ray.cancel(ref, force=True)
        _raise_first(errors)


def _ray_task(fn: Callable[[P], R], payload: P, cwd: str, threads: str) -> tuple[str, R]:
    import ray
    import torch

    if os.path.isdir(cwd):
        os.chdir(cwd)
    os.environ["HIFICL_THREADS"] = threads
    torch.set_num_threads(int(threads))  # tasks sharing a node must not each take all its cores
    return ray.get_runtime_context().get_node_id(), fn(payload)


def import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise ConfigError("--launcher ray needs Ray: pip install 'hificl[ray]' (or pip install ray).") from err
    return ray


def make_runner(launcher: Literal["local", "ray"] | str, workers: int = 1, address: str | None = None) -> Runner:
    """The runner a command line asks for (`--launcher`, `--workers`, `--address`)."""
    if launcher == "local":
        if address:
            raise ConfigError("--address is for --launcher ray; the local launcher runs on this machine.")
        return LocalRunner(workers)
    if launcher == "ray":
        import_ray()
        return RayRunner(address)
    raise ConfigError(f"--launcher must be one of {LAUNCHERS}, got {launcher!r}.")


def quiet_worker() -> None:
    """A worker process of the matrix or the tuner: silence per-run loading bars and Lightning's per-fit notices,
    so the driver's progress (one bar, or one line per trial) is what the user reads."""
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*no `val_dataloader`.*")  # validation is off unless asked for
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")  # raised inside Lightning
    # A matrix run's work directory (results/work/<run id>) is the matrix's own; on a re-run after a kill,
    # Lightning's CSV logger removes only its own stale metrics.csv there, which is what a fresh attempt wants.
    warnings.filterwarnings("ignore", message=r".*Experiment logs directory .* exists and is not empty.*")
