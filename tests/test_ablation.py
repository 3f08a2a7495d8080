"""The ablation matrix: stable cell ids, shared runs, resumption after kill -9, and the shipped YAML files."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from hificl.ablation import expand_matrix, run_matrix
from hificl.config import read_yaml
from hificl.experiment import experiment_config
from hificl.results import ResultsStore

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _small_matrix(path: Path) -> Path:
    spec = {
        "defaults": {
            "data": {"train_size": 16, "eval_size": 8, "batch_size": 8, "eval_batch_size": 8},
            "train": {"epochs": 1},
        },
        "tasks": ["syn-vqa"],
        "seeds": [0],
        "groups": {
            "main": {"variants": {"zero-shot": {"preset": "zero-shot"}, "hificl": {"preset": "hificl"}}},
            "rank": {"variants": {"r=2": {"preset": "hificl", "method": {"rank": 2}}, "r=8": {"preset": "hificl"}}},
        },
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def test_default_matrix_is_the_papers_and_shares_identical_runs() -> None:
    cells = expand_matrix(read_yaml(EXPERIMENTS / "ablations.yaml"), model="m")
    by_group: dict[str, int] = {}
    for cell in cells:
        by_group[cell.group] = by_group.get(cell.group, 0) + 1
    # 7 methods x 3 tasks x 3 seeds; 4 ablations x 3 x 3; 6 MimIC variants + LoRA-LM, r in 6 values, n in 5,
    # 3 methods x 4 sizes on syn-vqa x 3
    assert by_group == {"main": 63, "ablation": 36, "mimic": 21, "rank": 18, "tokens": 15, "data": 36}
    ids = {(c.group, c.variant, c.task, c.seed): c.run_id for c in cells}
    assert ids[("rank", "r=8", "syn-vqa", 1)] == ids[("main", "hificl", "syn-vqa", 1)]
    assert ids[("tokens", "n=8", "syn-vqa", 1)] == ids[("main", "hificl", "syn-vqa", 1)]
    assert ids[("data", "mimic@1000", "syn-vqa", 2)] == ids[("main", "mimic", "syn-vqa", 2)]
    assert ids[("mimic", "mimic", "syn-vqa", 0)] == ids[("main", "mimic", "syn-vqa", 0)]
    assert ids[("rank", "r=4", "syn-vqa", 0)] != ids[("rank", "r=8", "syn-vqa", 0)]
    assert len({c.cell_id for c in cells}) == len(cells)
    # r=8, n=8, three @1000 variants and the MimIC group's mimic share a run with the main table, per seed
    assert len({c.run_id for c in cells}) == len(cells) - 3 * (2 + 3 + 1)
    again = expand_matrix(read_yaml(EXPERIMENTS / "ablations.yaml"), model="m")
    assert [c.cell_id for c in again] == [c.cell_id for c in cells]
    quick = expand_matrix(read_yaml(EXPERIMENTS / "ablations.yaml"), model="m", quick=True)
    assert len(quick) == len(cells) // 3 and {c.seed for c in quick} == {0}


@pytest.mark.parametrize("name", ["paper-idefics2.yaml"])
def test_shipped_matrices_expand(name: str) -> None:
    cells = expand_matrix(read_yaml(EXPERIMENTS / name))
    assert cells and all(experiment_config(c.values).dtype == "bfloat16" for c in cells)


def test_shipped_experiment_config_parses() -> None:
    config = experiment_config(read_yaml(EXPERIMENTS / "idefics2-vqav2.yaml"))
    assert (config.data.batch_size, config.train.accumulate, config.train.precision) == (2, 2, "bf16-mixed")
    assert config.train.epochs_for(config.data.train_size) == 5


def test_rerun_skips_finished_cells_and_writes_cells_of_a_finished_run(tiny_world: Path, tmp_path: Path) -> None:
    matrix = _small_matrix(tmp_path / "m.yaml")
    rows = run_matrix(matrix, tmp_path / "r", model=str(tiny_world / "model"))
    assert len(rows) == 4
    store = ResultsStore(tmp_path / "r")
    assert len(list(store.runs.glob("*.json"))) == 3  # r=8 is the main table's HiFICL
    shared = [r for r in rows if r.variant in ("hificl", "r=8")]
    assert shared[0].run_id == shared[1].run_id and shared[0].result == shared[1].result
    assert {r.result.environment.threads for r in rows} == {torch.get_num_threads()}
    # a kill after a run was stored but before its cells were: the cells come back without re-running it
    victim = next(p for p in store.cells.glob("*.json") if '"zero-shot"' in p.read_text())
    victim.unlink()
    stamp = {p.name: p.stat().st_mtime_ns for p in store.runs.glob("*.json")}
    again = run_matrix(matrix, tmp_path / "r", model=str(tiny_world / "model"))
    assert len(again) == 4
    assert {p.name: p.stat().st_mtime_ns for p in store.runs.glob("*.json")} == stamp
    # a changed matrix: the cells it no longer holds leave the tables (kept under stale/), finished runs are reused
    spec = yaml.safe_load(matrix.read_text())
    del spec["groups"]["rank"]
    matrix.write_text(yaml.safe_dump(spec))
    assert len(run_matrix(matrix, tmp_path / "r", model=str(tiny_world / "model"))) == 2
    assert len(list((tmp_path / "r" / "stale" / "cells").glob("*.json"))) == 2
    assert {p.name: p.stat().st_mtime_ns for p in store.runs.glob("*.json")} == stamp


def kill_after_first_run(driver: subprocess.Popen[bytes], runs: Path, timeout: float) -> None:
    """SIGKILL an `ablate` driver as soon as its store holds one finished run (or after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while not (runs.is_dir() and any(runs.glob("*.json"))) and time.monotonic() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()


def _ablate(matrix: Path, results: Path, model: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "hificl.cli", "ablate", "--config", str(matrix), "--results", str(results)]
    cmd += ["--base-model", str(model)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})


def test_kill_9_mid_run_then_rerun_gives_the_uninterrupted_tables(tiny_world: Path, tmp_path: Path) -> None:
    matrix, model = _small_matrix(tmp_path / "m.yaml"), tiny_world / "model"
    start = time.monotonic()
    whole = _ablate(matrix, tmp_path / "whole", model)
    _, err = whole.communicate(timeout=600)
    assert whole.returncode == 0, err.decode()[-2000:]
    duration = time.monotonic() - start

    runs = tmp_path / "killed" / "runs"
    kill_after_first_run(_ablate(matrix, tmp_path / "killed", model), runs, timeout=600)
    assert len(list(runs.glob("*.json"))) < 3, "the run finished before it could be killed"
    rng = random.Random(0)
    for _ in range(2):  # then killed again at random moments of the resumed runs (loading, training, writing)
        killed = _ablate(matrix, tmp_path / "killed", model)
        time.sleep(rng.uniform(0.2, 0.8) * duration)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    resumed = _ablate(matrix, tmp_path / "killed", model)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err.decode()[-2000:]

    for table in ("main.csv", "rank_sweep.csv"):
        a = (tmp_path / "whole" / "report" / "tables" / table).read_text()
        b = (tmp_path / "killed" / "report" / "tables" / table).read_text()
        assert a == b
    assert len(list((tmp_path / "killed" / "cells").glob("*.json"))) == 4
    # a kill inside atomic_write_text leaves its hidden temp file (never read as a cell or run); sweeping the
    # temp files of dead writers belongs to the results store (hificl/results.py)
    assert all(p.name.startswith(".") for p in (tmp_path / "killed").rglob("*.tmp"))


@pytest.mark.parametrize("damage", ["truncate", "empty-object"])
def test_an_unreadable_run_or_cell_file_is_moved_aside_and_rerun(tiny_world: Path, tmp_path: Path, damage: str) -> None:
    """A truncated cell used to count as done forever; a run file `{}` used to make a broken cell."""
    spec = yaml.safe_load(_small_matrix(tmp_path / "m.yaml").read_text())
    spec["groups"] = {"main": {"variants": {"zero-shot": {"preset": "zero-shot"}}}}
    matrix = tmp_path / "m.yaml"
    matrix.write_text(yaml.safe_dump(spec))
    first = run_matrix(matrix, tmp_path / "r", model=str(tiny_world / "model"))
    store = ResultsStore(tmp_path / "r")
    (cell_file,), (run_file,) = list(store.cells.glob("*.json")), list(store.runs.glob("*.json"))
    for path in (cell_file, run_file):
        text = path.read_text()
        path.write_text(text[: len(text) // 2] if damage == "truncate" else "{}")
    again = run_matrix(matrix, tmp_path / "r", model=str(tiny_world / "model"))
    assert [c.result.metrics for c in again] == [c.result.metrics for c in first]
    assert store.cell(first[0].cell_id) == again[0] and store.run(first[0].run_id) == again[0].result
    assert sorted(p.name for p in (tmp_path / "r" / "invalid").rglob("*.json")) == sorted(
        [cell_file.name, run_file.name]
    )


def test_a_failing_run_still_leaves_the_report_of_the_others(
    tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One cell's NaN loss fails the command (exit 2, its message) after the others are stored; the report of
    what finished is written, and a re-run tries only the failed cell."""
    from hificl.cli import main

    data = {"train_size": 4, "eval_size": 2, "batch_size": 2, "eval_batch_size": 2}
    spec = {
        "defaults": {"data": data, "train": {"epochs": 3}},
        "tasks": ["syn-vqa"],
        "seeds": [0],
        "groups": {
            "main": {"variants": {"zero-shot": {"preset": "zero-shot"}, "hificl": {"preset": "hificl"}}},
            "broken": {"variants": {"nan": {"preset": "hificl", "train": {"lr": 1.0e30}}}},
        },
    }
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(spec))
    argv = ["ablate", "--config", str(tmp_path / "m.yaml"), "--results", str(tmp_path / "results")]
    argv += ["--base-model", str(tiny_world / "model")]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "training loss became nan" in err
    assert "from the cells that finished" in out
    main_table = (tmp_path / "results" / "report" / "tables" / "main.md").read_text()
    assert "Zero-shot" in main_table and "HiFICL" in main_table
    store = ResultsStore(tmp_path / "results")
    assert len(store.cell_rows()) == 2
    stored = {p: p.stat().st_mtime_ns for p in store.cells.glob("*.json")}
    assert main(argv) == 2  # the re-run retries the failed cell alone: the stored ones are not rewritten
    assert {p: p.stat().st_mtime_ns for p in store.cells.glob("*.json")} == stored
    assert "2/3" in capsys.readouterr().err  # the progress bar starts at the two finished cells
