"""hificl.launch: the local runner (in process or a spawned pool), failures, resources, the launcher choice."""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import pytest

from hificl.errors import ConfigError, TrainingError
from hificl.launch import Job, LocalRunner, Resources, make_runner, resources_for


def square_or_fail(x: int) -> int:
    if x < 0:
        raise TrainingError(f"job {x} failed")
    return x * x


def die(x: int) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return x


@pytest.mark.parametrize("workers", [1, 2])
def test_every_job_runs_and_the_first_failure_is_raised_after_the_rest(workers: int) -> None:
    jobs = [Job(f"j{x}", x) for x in (3, -1, 4, -2, 5)]
    got: dict[str, int] = {}
    with pytest.raises(TrainingError, match=r"job -(1|2) failed"):
        for key, value in LocalRunner(workers).run(square_or_fail, jobs):
            got[key] = value
    assert got == {"j3": 9, "j4": 16, "j5": 25}


def test_a_worker_killed_by_the_os_fails_its_job_instead_of_hanging_the_pool() -> None:
    from concurrent.futures.process import BrokenProcessPool

    with pytest.raises(BrokenProcessPool):
        list(LocalRunner(2).run(die, [Job("a", 1), Job("b", 2)]))


def test_resources_follow_the_train_config() -> None:
    def train(accelerator: str, devices: int | str = 1, strategy: str = "auto") -> SimpleNamespace:
        return SimpleNamespace(accelerator=accelerator, devices=devices, strategy=strategy)

    assert resources_for(train("cpu"), cpus=4) == Resources(cpus=4, gpus=0.0, devices=1)
    assert resources_for(train("gpu", "0,1", "ddp_spawn")) == Resources(cpus=1, gpus=2.0, devices=2)
    assert resources_for(train("auto")) == Resources(cpus=1, gpus=None, devices=1)  # GPUs if the cluster has any
    with pytest.raises(ConfigError, match="ddp_spawn"):
        resources_for(train("gpu", 2, "ddp"))


def test_launcher_choice() -> None:
    assert isinstance(make_runner("local", 3), LocalRunner)
    with pytest.raises(ConfigError, match="--address is for --launcher ray"):
        make_runner("local", 1, "auto")
    with pytest.raises(ConfigError, match="--launcher must be one of"):
        make_runner("slurm")
    with pytest.raises(ConfigError, match="--workers must be >= 1"):
        make_runner("local", 0)
