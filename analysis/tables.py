"""The paper's tables from the results store: main comparison, HiFICL ablations, MimIC variants, rank / token
sweeps, data efficiency, CHAIR; each as CSV (numbers), Markdown and LaTeX (booktabs), mean ± std over seeds,
best per column in bold."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.chair_report import chair_table, hallucination_table
from analysis.naming import (
    METHOD_LABELS,
    SCALE,
    VARIANT_LABELS,
    method_label,
    ordered,
    task_header,
    task_metric,
    tasks_of,
    variant_label,
)
from analysis.render import Best, Cell, Column, Stat, Table, write_table
from analysis.store import load_results, results_frame
from hificl.results import CellRow

__all__ = [
    "ablation_cells",
    "ablation_table",
    "all_tables",
    "data_table",
    "format_params",
    "main_table",
    "mimic_table",
    "paired_delta",
    "sweep_table",
    "write_tables",
]

log = logging.getLogger(__name__)


def stat_of(cells: pd.DataFrame, metric: str) -> Stat | None:
    """Mean ± std over the cells' seeds in display units; None when no cell has the metric."""
    if metric not in cells or cells[metric].notna().sum() == 0:
        return None
    return Stat.of(cells[metric].astype(float).tolist(), SCALE)


def task_column(sub: pd.DataFrame, key: str, keys: list[Any], task: str, best: Best = "max") -> Column:
    """One task's metric for each row key (e.g. each preset), over seeds."""
    metric = task_metric(sub, task)
    on_task = sub[sub["task"] == task]
    cells: list[Cell] = [stat_of(on_task[on_task[key] == k], metric) for k in keys]
    return Column(task_header(sub, task), cells, best=best)


def format_params(n: float) -> str:
    """Trainable parameters the way papers print them: 2228224 -> "2.23M"."""
    if math.isnan(n):
        return "–"
    for size, suffix, digits in ((1e9, "B", 2), (1e6, "M", 2), (1e3, "K", 1)):
        if n >= size:
            return f"{n / size:.{digits}f}{suffix}"
    return str(int(n))


def main_table(frame: pd.DataFrame) -> Table | None:
    """Methods (group "main") x tasks: accuracy for VQA, CIDEr for captions, and trainable parameters."""
    main = frame[frame["group"] == "main"]
    if main.empty:
        return None
    presets = ordered(list(main["preset"].unique()), list(METHOD_LABELS))
    columns = [task_column(main, "preset", presets, task) for task in tasks_of(main)]
    params = [main.loc[main["preset"] == p, "num_trainable"].max() for p in presets]
    texts: list[Cell] = [format_params(float(n)) for n in params]
    columns.append(Column("#params", texts, kind="text", best=None))
    title = "Main results: mean ± std over seeds (accuracy %, CIDEr x 100)"
    return Table("main", title, "Method", [method_label(p) for p in presets], columns)


def ablation_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """The "ablation" group plus full HiFICL's "main" cells (as variant "hificl") on the tasks ablated."""
    ablations = frame[frame["group"] == "ablation"]
    full = frame[(frame["group"] == "main") & (frame["preset"] == "hificl") & frame["task"].isin(ablations["task"])]
    return pd.concat([full.assign(variant="hificl"), ablations], ignore_index=True) if len(ablations) else ablations


def paired_delta(cells: pd.DataFrame, reference: pd.DataFrame, metric: str) -> Stat | None:
    """Variant minus reference seed by seed, over the seeds both ran: the spread of the difference itself,
    which is what says whether a variant differs (seed-to-seed noise shared by both arms cancels)."""
    if metric not in cells or metric not in reference:
        return None
    ours = cells.groupby("seed")[metric].mean()
    theirs = reference.groupby("seed")[metric].mean()
    seeds = sorted(set(ours.dropna().index) & set(theirs.dropna().index))
    return Stat.of([float(ours[s] - theirs[s]) for s in seeds], SCALE) if seeds else None


def variants_table(sub: pd.DataFrame, reference: str, order: list[str], name: str, title: str) -> Table | None:
    """Variants (column "variant") x tasks, each task followed by every variant's paired Δ from `reference`."""
    if sub.empty:
        return None
    variants = ordered(list(sub["variant"].unique()), order)
    columns = []
    for task in tasks_of(sub):
        column = task_column(sub, "variant", variants, task)
        on_task = sub[sub["task"] == task]
        ref = on_task[on_task["variant"] == reference]
        metric = task_metric(sub, task)
        deltas: list[Cell] = [
            paired_delta(on_task[on_task["variant"] == v], ref, metric) if v != reference else None for v in variants
        ]
        columns += [column, Column(f"Δ {task}", deltas, kind="delta", best=None)]
    return Table(name, title, "Variant", [variant_label(v) for v in variants], columns)


def ablation_table(frame: pd.DataFrame) -> Table | None:
    """Ablation variants next to full HiFICL (its "main" cells), each with its paired difference from it."""
    title = "Ablations: mean ± std over seeds; Δ = variant - full HiFICL, seed by seed (mean ± std, points)"
    return variants_table(ablation_cells(frame), "hificl", list(VARIANT_LABELS), "ablation", title)


def mimic_table(frame: pd.DataFrame) -> Table | None:
    """MimIC's own variants (its supplementary Tab. 8 and mu ablations, group "mimic") against MimIC."""
    title = "MimIC variants: mean ± std over seeds; Δ = variant - MimIC, seed by seed (mean ± std, points)"
    variants = [k for k in METHOD_LABELS if k.startswith("mimic")]
    order = list(dict.fromkeys([*variants, *METHOD_LABELS]))  # MimIC, its variants, then the comparisons
    return variants_table(frame[frame["group"] == "mimic"], "mimic", order, "mimic_variants", title)


def sweep_table(frame: pd.DataFrame, group: str, setting: str, symbol: str, what: str) -> Table | None:
    """One HiFICL hyperparameter swept (group "rank": r, group "tokens": n) x tasks."""
    sub = frame[frame["group"] == group]
    unknown = sub[sub[setting].isna()]
    if not unknown.empty:
        log.warning("%s sweep: %d cell(s) without a %s setting left out", group, len(unknown), setting)
    sub = sub[sub[setting].notna()]
    if sub.empty:
        return None
    values = sorted(sub[setting].unique())
    columns = [task_column(sub, setting, values, task) for task in tasks_of(sub)]
    title = f"HiFICL {what} sweep: mean ± std over seeds"
    return Table(f"{group}_sweep", title, what, [f"{symbol} = {v:g}" for v in values], columns)


def data_table(frame: pd.DataFrame) -> Table | None:
    """Data efficiency: methods x (task, training-set size); bold is the best method at each size."""
    sub = frame[(frame["group"] == "data") & frame["train_size"].notna()]
    if sub.empty:
        return None
    presets = ordered(list(sub["preset"].unique()), list(METHOD_LABELS))
    columns = []
    for task in tasks_of(sub):
        on_task = sub[sub["task"] == task]
        for size in sorted(on_task["train_size"].unique()):
            column = task_column(on_task[on_task["train_size"] == size], "preset", presets, task)
            column.header = f"{column.header} @ {size:g}"
            columns.append(column)
    title = "Data efficiency: mean ± std over seeds per training-set size"
    return Table("data_efficiency", title, "Method", [method_label(p) for p in presets], columns)


def all_tables(cells: list[CellRow]) -> dict[str, Table | None]:
    """Every table by name; None where the store holds no cells for it."""
    frame = results_frame(cells)
    return {
        "main": main_table(frame),
        "ablation": ablation_table(frame),
        "mimic_variants": mimic_table(frame),
        "rank_sweep": sweep_table(frame, "rank", "rank", "r", "Rank"),
        "tokens_sweep": sweep_table(frame, "tokens", "n_tokens", "n", "Virtual tokens"),
        "data_efficiency": data_table(frame),
        "chair": chair_table(frame),
        "hallucinated_objects": hallucination_table(cells),
    }


def write_tables(results_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Write every table with data as CSV, Markdown and LaTeX into out_dir; log the ones skipped."""
    paths: list[Path] = []
    for name, table in all_tables(load_results(results_dir)).items():
        if table is None:
            log.info("table %s skipped: no cells for it in %s", name, results_dir)
            continue
        paths += write_table(table, Path(out_dir))
    return paths
