"""Hallucination on caption tasks: CHAIRs / CHAIRi / recall per method, and which objects each method invents.

CHAIR alone says how often a method hallucinates; the object counts say what it hallucinates, which is where
an ICL-approximation method inherits (or fixes) the demonstrations' biases.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

from analysis.naming import METHOD_LABELS, METRIC_LABELS, SCALE, TASK_ORDER, method_label, ordered, tasks_of
from analysis.render import Best, Cell, Column, Stat, Table
from hificl.results import CellRow

CHAIR_METRICS: tuple[tuple[str, Best], ...] = (("chair_s", "min"), ("chair_i", "min"), ("recall", "max"))


def _main_caption_cells(frame: pd.DataFrame) -> pd.DataFrame:
    if "chair_s" not in frame:
        return frame.iloc[0:0]
    return frame[(frame["group"] == "main") & frame["chair_s"].notna()]


def chair_table(frame: pd.DataFrame) -> Table | None:
    """Methods x (caption task, CHAIR metric) in percent; lower CHAIR and higher recall are bold."""
    sub = _main_caption_cells(frame)
    if sub.empty:
        return None
    presets = ordered(list(sub["preset"].unique()), list(METHOD_LABELS))
    columns = []
    for task in tasks_of(sub):
        on_task = sub[sub["task"] == task]
        for metric, best in CHAIR_METRICS:
            cells: list[Cell] = []
            for preset in presets:
                values = on_task.loc[on_task["preset"] == preset, metric] if metric in on_task else pd.Series()
                cells.append(Stat.of(values.astype(float).tolist(), SCALE) if values.notna().any() else None)
            header = f"{task} {METRIC_LABELS[metric]} {'↓' if best == 'min' else '↑'}"
            columns.append(Column(header, cells, best=best))
    title = "Object hallucination (CHAIR, %): mean ± std over seeds"
    return Table("chair", title, "Method", [method_label(p) for p in presets], columns)


def hallucination_counts(cells: list[CellRow]) -> dict[tuple[str, str], Counter[str]]:
    """{(task, preset): object -> times hallucinated, summed over seeds} for the main-group caption cells."""
    counts: dict[tuple[str, str], Counter[str]] = {}
    for cell in cells:
        row = cell.result
        if cell.group != "main" or "chair_s" not in row.metrics:  # CHAIR is for captions
            continue
        counts.setdefault((row.task, row.preset), Counter()).update(row.hallucinated_objects)
    return counts


def top_hallucinated(counter: Counter[str], k: int = 5) -> list[tuple[str, int]]:
    """The k most hallucinated objects, most first; ties by name so the table is deterministic."""
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:k]


def hallucination_table(cells: list[CellRow], k: int = 5) -> Table | None:
    """One text cell per (method, caption task): "circle (12), square (7), ..."."""
    counts = hallucination_counts(cells)
    if not counts:
        return None
    tasks = ordered(sorted({task for task, _ in counts}), TASK_ORDER)
    presets = ordered(sorted({preset for _, preset in counts}), list(METHOD_LABELS))
    columns = []
    for task in tasks:
        texts: list[Cell] = []
        for preset in presets:
            counter = counts.get((task, preset))
            top = top_hallucinated(counter, k) if counter is not None else []
            texts.append(None if counter is None else ", ".join(f"{name} ({n})" for name, n in top) or "none")
        columns.append(Column(f"{task}: top {k} hallucinated objects", texts, kind="text", best=None))
    title = f"Most frequently hallucinated objects (count summed over seeds, top {k})"
    return Table("hallucinated_objects", title, "Method", [method_label(p) for p in presets], columns)
