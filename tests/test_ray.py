"""The matrix on a real two-node Ray cluster (ray.cluster_utils, both nodes on this machine): the same tables as
the local runner, runs spread over both nodes, and a re-run that submits only what the store lacks."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from analysis.report import build_report
from hificl.ablation import run_matrix
from hificl.launch import RayRunner
from hificl.results import ResultsStore
from tests.test_ablation import _small_matrix

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


def test_matrix_on_two_ray_nodes_gives_the_local_tables(tiny_world: Path, tmp_path: Path, two_nodes: Cluster) -> None:
    matrix, model = _small_matrix(tmp_path / "m.yaml"), str(tiny_world / "model")
    local = run_matrix(matrix, tmp_path / "local", model=model)
    runner = RayRunner(address=two_nodes.address)
    remote = run_matrix(matrix, tmp_path / "ray", model=model, runner=runner)

    assert len(remote) == len(local) == 4
    assert len(runner.placements) == 3  # zero-shot, hificl (= r=8), r=2
    alive = {node["NodeID"] for node in _alive_nodes(two_nodes)}
    assert set(runner.placements.values()) == alive and len(alive) == 2
    assert [(r["cell_id"], r["metrics"]) for r in remote] == [(r["cell_id"], r["metrics"]) for r in local]
    tables = _tables(tmp_path / "ray")
    assert {"main.csv", "rank_sweep.csv"} <= set(tables) and tables == _tables(tmp_path / "local")
    for run_id in runner.placements:  # the driver wrote each run's generations beside its record
        ours, theirs = (tmp_path / d / "runs" / run_id / "predictions.json" for d in ("ray", "local"))
        assert ours.read_text() == theirs.read_text()

    # a driver killed before one run's result arrived: re-running submits that run alone, the rest is kept
    store = ResultsStore(tmp_path / "ray")
    lost = next(iter(runner.placements))
    (store.runs / f"{lost}.json").unlink()
    shutil.rmtree(store.runs / lost)
    for cell in store.cells.glob("*.json"):
        if f'"run_id": "{lost}"' in cell.read_text():
            cell.unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in store.runs.glob("*.json")}
    again = RayRunner(address=two_nodes.address)
    run_matrix(matrix, tmp_path / "ray", model=model, runner=again)
    assert list(again.placements) == [lost]
    assert {p.name: p.stat().st_mtime_ns for p in store.runs.glob("*.json") if p.name in kept} == kept
    assert _tables(tmp_path / "ray") == _tables(tmp_path / "local")


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
