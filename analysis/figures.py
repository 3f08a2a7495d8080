"""The paper's figures from the results store, each as PNG and PDF; a figure without data is skipped and logged.

Figures are built on `matplotlib.figure.Figure` directly, never pyplot: no global backend or open-figure state,
so this runs headless (Agg) inside the CLI, a test or a notebook alike.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis.chair_report import CHAIR_METRICS
from analysis.naming import (
    METHOD_LABELS,
    METRIC_LABELS,
    SCALE,
    VARIANT_LABELS,
    method_label,
    ordered,
    task_metric,
    tasks_of,
    variant_label,
)
from analysis.render import Stat
from analysis.store import load_bench, load_results, results_frame
from analysis.tables import ablation_cells
from hificl.files import atomic_write_bytes

log = logging.getLogger(__name__)

Bench = dict[str, dict[str, float]] | None
MeanStd = tuple[float, float]
COST_PRESETS = ("hificl", "mimic", "lora")
LATENCY_PRESETS = (("zero-shot", "zero_shot_ms"), ("hificl", "hificl_ms"), ("icl", "icl_ms"))


def mean_std(values: pd.Series, scale: float = 1.0) -> MeanStd:
    """The tables' `Stat` (mean, sample std) as a pair: one seed has no std (NaN), so it gets no error bar."""
    stat = Stat.of(values.dropna().astype(float).tolist(), scale)
    return stat.mean, stat.std


def _task_axes(n: int, width: float = 4.2, height: float = 3.2) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width * n, height), layout="constrained")
    return fig, list(fig.subplots(1, n, squeeze=False)[0])


def _grouped_bars(ax: Axes, groups: list[str], series: dict[str, list[MeanStd]]) -> None:
    """One cluster of bars per group, one bar (with its std error bar) per series."""
    width = 0.8 / max(1, len(series))
    for j, (label, stats) in enumerate(series.items()):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, [m for m, _ in stats], width, yerr=[s for _, s in stats], capsize=3, label=label)
    ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right")
    ax.legend(fontsize="small")


def _per_task(sub: pd.DataFrame, preset: str, column: str, tasks: list[str], scale: float = 1.0) -> list[MeanStd]:
    return [mean_std(sub.loc[(sub["preset"] == preset) & (sub["task"] == t), column], scale) for t in tasks]


def data_efficiency(frame: pd.DataFrame, bench: Bench) -> Figure | None:
    """Metric vs training-set size per method, with 8-shot ICL (needs no training) as a horizontal line."""
    sub = frame[(frame["group"] == "data") & frame["train_size"].notna()]
    if sub.empty:
        return None
    tasks = tasks_of(sub)
    fig, axes = _task_axes(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        metric = task_metric(frame, task)
        on_task = sub[sub["task"] == task]
        for preset in ordered(list(on_task["preset"].unique()), list(METHOD_LABELS)):
            cells = on_task[on_task["preset"] == preset]
            sizes = sorted(cells["train_size"].unique())
            stats = [mean_std(cells.loc[cells["train_size"] == s, metric], SCALE) for s in sizes]
            ax.errorbar(sizes, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3,
                        label=method_label(preset))  # fmt: skip
        icl = frame[(frame["group"] == "main") & (frame["preset"] == "icl") & (frame["task"] == task)]
        icl_mean, _ = mean_std(icl[metric], SCALE) if metric in icl else (math.nan, 0.0)
        if not math.isnan(icl_mean):
            ax.axhline(icl_mean, linestyle="--", color="gray", label=method_label("icl"))
        sizes = sorted(on_task["train_size"].unique())
        if sizes[-1] >= 8 * max(1.0, sizes[0]):
            ax.set_xscale("log")
        ax.set_xticks(sizes, [f"{s:g}" for s in sizes])
        ax.set(title=task, xlabel="training-set size", ylabel=METRIC_LABELS[metric])
        ax.legend(fontsize="small")
    return fig


def _sweep(frame: pd.DataFrame, group: str, setting: str, xlabel: str, log2: bool) -> Figure | None:
    sub = frame[(frame["group"] == group) & frame[setting].notna()]
    if sub.empty:
        return None
    tasks = tasks_of(sub)
    fig, axes = _task_axes(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        on_task = sub[sub["task"] == task]
        values = sorted(on_task[setting].unique())
        stats = [mean_std(on_task.loc[on_task[setting] == v, task_metric(frame, task)], SCALE) for v in values]
        ax.errorbar(values, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3)
        if log2:
            ax.set_xscale("log", base=2)
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.set(title=task, xlabel=xlabel, ylabel=METRIC_LABELS[task_metric(frame, task)])
    return fig


def rank_sweep(frame: pd.DataFrame, bench: Bench) -> Figure | None:
    """HiFICL metric vs the low-rank factor r (log2 axis: the sweep doubles r)."""
    return _sweep(frame, "rank", "rank", "rank r", log2=True)


def token_sweep(frame: pd.DataFrame, bench: Bench) -> Figure | None:
    """HiFICL metric vs the number n of virtual tokens per head."""
    return _sweep(frame, "tokens", "n_tokens", "virtual tokens n", log2=False)


def ablation_bars(frame: pd.DataFrame, bench: Bench) -> Figure | None:
    """Full HiFICL and each ablation variant, one panel per task, std over seeds as error bars."""
    sub = ablation_cells(frame)
    if sub.empty:
        return None
    tasks = tasks_of(sub)
    fig, axes = _task_axes(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        on_task = sub[sub["task"] == task]
        variants = ordered(list(on_task["variant"].unique()), list(VARIANT_LABELS))
        stats = [mean_std(on_task.loc[on_task["variant"] == v, task_metric(frame, task)], SCALE) for v in variants]
        ax.bar(range(len(variants)), [m for m, _ in stats], yerr=[s for _, s in stats], capsize=3,
               color=["tab:red" if v == "hificl" else "tab:blue" for v in variants])  # fmt: skip
        ax.set_xticks(range(len(variants)), [variant_label(v) for v in variants], rotation=25, ha="right")
        ax.set(title=task, ylabel=METRIC_LABELS[task_metric(frame, task)])
    return fig


def training_cost(frame: pd.DataFrame, bench: Bench) -> Figure | None:
    """Median time per optimizer step and total training time of HiFICL, MimIC and LoRA, per task."""
    sub = frame[(frame["group"] == "main") & frame["preset"].isin(COST_PRESETS) & (frame["step_time_s"] > 0)]
    if sub.empty:
        return None
    tasks = tasks_of(sub)
    presets = ordered(list(sub["preset"].unique()), COST_PRESETS)
    fig, (step_ax, total_ax) = _task_axes(2, width=max(4.2, 1.6 * len(tasks)))
    for ax, column, scale, ylabel in (
        (step_ax, "step_time_s", 1000.0, "time per step (ms)"),
        (total_ax, "train_time_s", 1.0, "total training time (s)"),
    ):
        series = {method_label(p): _per_task(sub, p, column, tasks, scale) for p in presets}
        _grouped_bars(ax, tasks, series)
        ax.set(ylabel=ylabel)
    return fig


def inference_latency(frame: pd.DataFrame, bench: Bench) -> Figure | None:
    """Per-sample latency of zero-shot, HiFICL and 8-shot ICL: `make bench`'s numbers when present (one
    controlled measurement), else the evaluation timings recorded with each cell."""
    measured = (bench or {}).get("inference", {})
    if any(key in measured for _, key in LATENCY_PRESETS):
        presets = [(p, key) for p, key in LATENCY_PRESETS if key in measured]
        fig = Figure(figsize=(4.5, 3.2), layout="constrained")
        ax = fig.subplots()
        ax.bar([method_label(p) for p, _ in presets], [measured[key] for _, key in presets], color="tab:blue")
        ax.set(ylabel="ms per sample", title="inference latency (make bench)")
        return fig
    sub = frame[(frame["group"] == "main") & frame["preset"].isin([p for p, _ in LATENCY_PRESETS])]
    sub = sub[sub["eval_ms_per_sample"] > 0]
    if sub.empty:
        return None
    tasks = tasks_of(sub)
    shown = ordered(list(sub["preset"].unique()), [p for p, _ in LATENCY_PRESETS])
    fig, (ax,) = _task_axes(1, width=max(4.5, 1.6 * len(tasks)))
    series = {method_label(p): _per_task(sub, p, "eval_ms_per_sample", tasks) for p in shown}
    _grouped_bars(ax, tasks, series)
    ax.set(ylabel="ms per sample", title="inference latency (evaluation runs)")
    return fig


def chair_bars(frame: pd.DataFrame, bench: Bench) -> Figure | None:
    """CHAIRs, CHAIRi and recall (%) per method on each caption task, grouped by method."""
    if "chair_s" not in frame:
        return None
    sub = frame[(frame["group"] == "main") & frame["chair_s"].notna()]
    if sub.empty:
        return None
    tasks = tasks_of(sub)
    fig, axes = _task_axes(len(tasks), width=5.5)
    for ax, task in zip(axes, tasks, strict=True):
        on_task = sub[sub["task"] == task]
        presets = ordered(list(on_task["preset"].unique()), list(METHOD_LABELS))
        series = {
            METRIC_LABELS[m]: [mean_std(on_task.loc[on_task["preset"] == p, m], SCALE) for p in presets]
            for m, _ in CHAIR_METRICS
            if m in on_task
        }
        _grouped_bars(ax, [method_label(p) for p in presets], series)
        ax.set(title=task, ylabel="%")
    return fig


FIGURES: dict[str, Callable[[pd.DataFrame, Bench], Figure | None]] = {
    "data_efficiency": data_efficiency,
    "rank_sweep": rank_sweep,
    "token_sweep": token_sweep,
    "ablation": ablation_bars,
    "training_cost": training_cost,
    "inference_latency": inference_latency,
    "chair": chair_bars,
}


def write_figures(results_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Write every figure with data as `<name>.png` and `<name>.pdf` into out_dir; log the ones skipped."""
    frame = results_frame(load_results(results_dir))
    bench = load_bench(results_dir)
    out = Path(out_dir)
    paths: list[Path] = []
    for name, build in FIGURES.items():
        fig = build(frame, bench)
        if fig is None:
            log.info("figure %s skipped: no cells for it in %s", name, results_dir)
            continue
        for ext in ("png", "pdf"):
            image = io.BytesIO()
            fig.savefig(image, format=ext, dpi=200)
            paths.append(atomic_write_bytes(out / f"{name}.{ext}", image.getvalue()))
    return paths
