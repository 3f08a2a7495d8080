"""Kept generations: every matrix run writes predictions.json beside its record, and scoring them again gives the
stored metrics back exactly; an edited generation changes the record, its cells and the tables."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hificl.ablation import run_matrix
from hificl.batch import TrainBatch
from hificl.cli import main
from hificl.data.synthetic_scenes import SHAPES
from hificl.lightning.module import ICLApproxModule
from hificl.metrics.vqa import vqa_accuracy
from hificl.rescore import read_predictions, rescore_store, score_predictions
from hificl.results import ResultRow, ResultsStore


def _matrix(path: Path) -> Path:
    spec = {
        "defaults": {
            "data": {"train_size": 8, "eval_size": 6, "batch_size": 4, "eval_batch_size": 4},  # 2 eval batches
            "train": {"epochs": 1},
        },
        "tasks": ["syn-vqa", "syn-caption"],
        "seeds": [0],
        "groups": {
            "main": {"variants": {"zero-shot": {"preset": "zero-shot"}, "hificl": {"preset": "hificl"}}},
            "ok": {"tasks": ["syn-okvqa"], "variants": {"zero-shot": {"preset": "zero-shot"}}},
        },
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def _graded_generations(self: ICLApproxModule, batch: TrainBatch) -> list[str]:
    """Stands in for the random test model's generations (all ':'), so every metric has a non-trivial value:
    right, partly right (the last of 10 answers) and wrong answers; true captions, some with a hallucination."""
    out = []
    for i, meta in enumerate(batch.meta):
        if "answers" in meta:
            out.append([meta["answers"][0], meta["answers"][-1], "no"][i % 3])
        else:
            absent = next(s for s in SHAPES if s not in meta["objects"])
            out.append(meta["captions"][0] + ("" if i % 2 == 0 else f" and a {absent}"))
    return out


@pytest.fixture(scope="module")
def store(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> ResultsStore:
    root = tmp_path_factory.mktemp("rescore")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ICLApproxModule, "generate", _graded_generations)
        run_matrix(_matrix(root / "m.yaml"), root / "results", model=str(tiny_world / "model"))
    return ResultsStore(root / "results")


def _runs(store: ResultsStore) -> dict[str, ResultRow]:
    runs = {p.stem: store.run(p.stem) for p in sorted(store.runs.glob("*.json"))}
    return {run_id: row for run_id, row in runs.items() if row is not None}


def test_every_run_keeps_its_generations_and_rescoring_gives_its_metrics_back_exactly(store: ResultsStore) -> None:
    runs = _runs(store)
    assert len(runs) == 5
    metrics_seen = set()
    for run_id, row in runs.items():
        payload = read_predictions(store.runs / run_id / "predictions.json")
        assert payload["task"] == row.task and len(payload["items"]) == row.eval_size == 6
        assert [i["batch"] for i in payload["items"]] == [0, 0, 0, 0, 1, 1]
        metrics, hallucinated = score_predictions(payload)
        assert metrics == row.metrics  # exact, not approx
        assert hallucinated == row.hallucinated_objects
        metrics_seen |= {k for k, v in metrics.items() if v > 0}
    assert metrics_seen == {"accuracy", "cider", "chair_s", "chair_i", "recall"}  # every metric non-trivial
    assert payload_vocabulary(store, runs, "syn-caption")  # the synthetic objects' names, kept for CHAIR
    csv = (store.root / "results.csv").read_text()
    assert rescore_store(store.root) == {"runs": 5, "rescored": 5, "changed": 0}
    assert (store.root / "results.csv").read_text() == csv


def payload_vocabulary(store: ResultsStore, runs: dict[str, ResultRow], task: str) -> dict[str, list[str]]:
    run_id = next(r for r, row in runs.items() if row.task == task)
    return read_predictions(store.runs / run_id / "predictions.json")["chair_vocabulary"]


def test_an_edited_generation_is_rescored_into_records_cells_and_tables(store: ResultsStore) -> None:
    runs = _runs(store)
    run_id = next(r for r, row in runs.items() if row.task == "syn-vqa" and row.preset == "zero-shot")
    path = store.runs / run_id / "predictions.json"
    payload = json.loads(path.read_text())
    item = payload["items"][2]  # answered "no"
    before = vqa_accuracy(item["prediction"], item["answers"])
    item["prediction"] = item["answers"][0]  # now right
    gain = vqa_accuracy(item["prediction"], item["answers"]) - before
    assert gain > 0
    path.write_text(json.dumps(payload))

    assert main(["figures", "--results", str(store.root), "--rescore"]) == 0
    after = _runs(store)
    row = after[run_id]
    assert row.metrics["accuracy"] == pytest.approx(runs[run_id].metrics["accuracy"] + gain / 6, abs=1e-12)
    assert row == dataclasses.replace(runs[run_id], metrics=row.metrics)  # only the metrics changed
    assert [c.result for c in store.cell_rows() if c.run_id == run_id] == [row]
    assert {r: v for r, v in after.items() if r != run_id} == {r: v for r, v in runs.items() if r != run_id}
    table = pd.read_csv(store.root / "report" / "tables" / "main.csv").set_index("Method")
    assert table.loc["Zero-shot", "syn-vqa (Acc) mean"] == pytest.approx(100 * row.metrics["accuracy"])
