"""The matrix on a real two-node Ray cluster (ray.cluster_utils, both nodes on this machine): the same tables as
the local runner, runs spread over both nodes, and a re-run that submits only what the store lacks."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from analysis.report import build_report
from hificl.ablation import run_matrix
from hificl.launch import RayRunner
from hificl.results import ResultsStore
from tests.test_ablation import _small_matrix, kill_after_first_run

ray = pytest.importorskip("ray", reason="Ray is the optional extra hificl[ray]; `make install` installs it")
from ray.cluster_utils import Cluster  # noqa: E402

STORE_BYTES = 100 * 1024**2  # the object store's minimum is 75 MiB; results are a few KB


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[Cluster]:
    """A head and a worker node of one CPU each, so two runs at once must use both nodes."""
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": STORE_BYTES, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=1, object_store_memory=STORE_BYTES)
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _tables(results: Path) -> dict[str, str]:
    build_report(results)
    return {p.name: p.read_text() for p in sorted((results / "report" / "tables").glob("*.csv"))}


@pytest.fixture(scope="module")
def local(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small matrix run by the local runner: the store every Ray run must reproduce."""
    root = tmp_path_factory.mktemp("local")
    run_matrix(_small_matrix(root / "m.yaml"), root / "results", model=str(tiny_world / "model"))
    return root / "results"


def test_matrix_on_two_ray_nodes_gives_the_local_tables(
    tiny_world: Path, tmp_path: Path, two_nodes: Cluster, local: Path
) -> None:
    runner = RayRunner(address=two_nodes.address)
    rows = run_matrix(_small_matrix(tmp_path / "m.yaml"), tmp_path, model=str(tiny_world / "model"), runner=runner)

    assert len(runner.placements) == 3  # zero-shot, hificl (= r=8), r=2: two at a time on 1-CPU nodes
    alive = {node["NodeID"] for node in _alive_nodes(two_nodes)}
    assert set(runner.placements.values()) == alive and len(alive) == 2
    expected = ResultsStore(local).cell_rows()
    assert [(r.cell_id, r.result.metrics) for r in rows] == [(r.cell_id, r.result.metrics) for r in expected]
    tables = _tables(tmp_path)
    assert {"main.csv", "rank_sweep.csv"} <= set(tables) and tables == _tables(local)
    for run_id in runner.placements:  # the driver wrote each run's generations beside its record
        ours, theirs = (root / "runs" / run_id / "predictions.json" for root in (tmp_path, local))
        assert ours.read_text() == theirs.read_text()


def _alive_nodes(cluster: Cluster) -> list[dict]:
    ray.init(address=cluster.address)
    try:
        return [node for node in ray.nodes() if node["Alive"]]
    finally:
        ray.shutdown()


def test_tune_workers_as_ray_tasks_share_one_budget_exactly(tmp_path: Path, two_nodes: Cluster) -> None:
    """Two Optuna workers as Ray tasks, one per node, on one journal file: each slot runs once, none is lost."""
    from tests.test_tune import N_TRIALS, check_budget, run

    storage = f"journal:{tmp_path}/study.log"
    runner = RayRunner(address=two_nodes.address)
    result = run(tmp_path, storage, workers=2, n_trials=N_TRIALS, runner=runner)
    check_budget(storage, N_TRIALS)
    assert sum(result["trials"].values()) == N_TRIALS
    assert len(set(runner.placements.values())) == 2


def test_a_driver_killed_mid_matrix_resumes_on_the_cluster(
    tiny_world: Path, tmp_path: Path, two_nodes: Cluster, local: Path
) -> None:
    """kill -9 of `hificl ablate --launcher ray` once a run is stored: Ray ends the dead driver's tasks, and the
    next driver keeps the stored runs, submits the rest, and writes the same tables as an uninterrupted store."""
    matrix, model = _small_matrix(tmp_path / "m.yaml"), tiny_world / "model"
    cmd = [sys.executable, "-m", "hificl.cli", "ablate", "--config", str(matrix), "--results", str(tmp_path / "r")]
    cmd += ["--base-model", str(model), "--launcher", "ray", "--address", two_nodes.address]
    runs = tmp_path / "r" / "runs"
    kill_after_first_run(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), runs, 300)
    stored = {p.name: p.stat().st_mtime_ns for p in runs.glob("*.json")}
    assert 1 <= len(stored) < 3, "the matrix finished before its driver could be killed"

    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"({3 - len(stored)} runs this time)" in resumed.stdout
    assert {p.name: p.stat().st_mtime_ns for p in runs.glob("*.json") if p.name in stored} == stored
    assert _tables(tmp_path / "r") == _tables(local)
