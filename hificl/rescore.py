"""Kept generations and scoring them again: CHAIR, CIDEr, VQA accuracy or a new metric, without re-running.

Every run of the matrix keeps its generations beside its record:

    results/runs/<run_id>.json                the run's record (metrics, config, ...)
    results/runs/<run_id>/predictions.json    its generations with their references (hificl.lightning.predictions)

`score_predictions` replays the evaluation's metric updates batch by batch with the same metric classes, so an
unchanged metric gives the stored numbers back exactly; `rescore_store` (`hificl figures --rescore`) rewrites
the records and cells whose metrics changed (a fixed metric, a new one), then the CSV.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from itertools import groupby
from pathlib import Path
from typing import Any

from hificl.errors import DataError
from hificl.files import atomic_write_text
from hificl.results import ResultRow, ResultsStore

PREDICTIONS = "predictions.json"


def run_dir(store: ResultsStore, run_id: str) -> Path:
    """A run's files beside its record `runs/<run_id>.json`: generations, training metrics."""
    return store.runs / run_id


def write_run_files(store: ResultsStore, run_id: str, files: dict[str, str]) -> None:
    """Each file atomically; called before the run's record is written, so a record implies its files."""
    for name, text in files.items():
        atomic_write_text(run_dir(store, run_id) / name, text)


def predictions_text(payload: dict[str, Any]) -> str:
    return json.dumps(payload, indent=1, sort_keys=True)


def read_predictions(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"Predictions file {path} is not valid JSON: {err}") from err
    if not isinstance(payload, dict) or not isinstance(payload.get("items"), list) or "metric" not in payload:
        raise DataError(f"Predictions file {path} lacks its 'metric' or its 'items' list.")
    return payload


def score_predictions(payload: dict[str, Any]) -> tuple[dict[str, float], dict[str, int]]:
    """(metrics, hallucinated object counts) of kept generations, as the evaluation computed them."""
    from hificl.metrics.chair import CHAIR
    from hificl.metrics.cider import CIDEr
    from hificl.metrics.okvqa import OKVQAAccuracy
    from hificl.metrics.vqa import VQAAccuracy

    batches = [list(rows) for _, rows in groupby(payload["items"], key=lambda item: item["batch"])]
    if payload["metric"] == "caption":
        cider, chair = CIDEr(), CHAIR(vocabulary=payload.get("chair_vocabulary"))
        for rows in batches:
            generated = [r["prediction"] for r in rows]
            cider.update(generated, [r["captions"] for r in rows])
            chair.update(generated, [r["objects"] for r in rows], [r["captions"] for r in rows])
        counts: Counter[str] = Counter()
        for record in chair.caption_records():
            counts.update(record["hallucinated"])
        metrics = {"cider": float(cider.compute()), **{k: float(v) for k, v in chair.compute().items()}}
        return metrics, dict(counts.most_common())
    accuracy = OKVQAAccuracy() if payload["metric"] == "okvqa" else VQAAccuracy()
    for rows in batches:
        accuracy.update([r["prediction"] for r in rows], [r["answers"] for r in rows])
    return {"accuracy": float(accuracy.compute())}, {}


def rescore_store(root: str | Path) -> dict[str, int]:
    """Score every kept run again; rewrite records and cells whose metrics changed. Returns counts."""
    store = ResultsStore(root)
    if not store.runs.is_dir():
        raise DataError(f"Results directory {store.root} holds no runs/; run `hificl ablate` first.")
    changed: dict[str, ResultRow] = {}
    rescored = 0
    records = sorted(p for p in store.runs.glob("*.json") if not p.name.startswith("."))
    for record in records:
        path = run_dir(store, record.stem) / PREDICTIONS
        if not path.is_file():
            continue
        row = store.run(record.stem)  # None: unreadable, moved aside by the store (the matrix runs it again)
        if row is None:
            continue
        metrics, hallucinated = score_predictions(read_predictions(path))
        rescored += 1
        if row.metrics != metrics or row.hallucinated_objects != hallucinated:
            new = dataclasses.replace(row, metrics=metrics, hallucinated_objects=hallucinated)
            store.put_run(record.stem, new)
            changed[record.stem] = new
    for cell in store.cell_rows():
        if cell.run_id in changed:
            store.put_cell(dataclasses.replace(cell, result=changed[cell.run_id]))
    if changed:
        store.write_csv()
    return {"runs": len(records), "rescored": rescored, "changed": len(changed)}
