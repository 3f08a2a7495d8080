"""What a study leaves on disk: the best configuration as a runnable experiment config, every trial as CSV,
and Optuna's own matplotlib figures (history, importances, n x r contour)."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from hificl.config import deep_merge, to_dict
from hificl.files import atomic_write_text
from hificl.tuning.settings import TuneConfig, experiment_values


def write_outputs(study: optuna.Study, config: TuneConfig) -> dict[str, Any]:
    """Paths of what was written, and `notes` on figures that were skipped and why."""
    out = Path(config.study.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = study.trials_dataframe()
    if "state" in frame:
        frame = frame[frame["state"] != TrialState.WAITING.name]  # unclaimed slots are not trials yet
    atomic_write_text(out / "trials.csv", frame.to_csv(index=False))
    written: dict[str, Any] = {"trials_csv": str(out / "trials.csv"), "notes": []}
    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        written["best_yaml"] = str(write_best(study, config, out / "best.yaml"))
    written["figures"] = _figures(study, out, written["notes"])
    return written


def best_values(study: optuna.Study, config: TuneConfig) -> dict[str, Any]:
    """The full experiment config of the best trial: base experiment + its n/r (/lr) + the `final` overrides."""
    from hificl.experiment import experiment_config

    values = deep_merge(deep_merge(config.experiment, experiment_values(study.best_trial.params)), config.final)
    return to_dict(experiment_config(values))


def write_best(study: optuna.Study, config: TuneConfig, path: Path) -> Path:
    best = study.best_trial
    header = (
        f"# Best of study {study.study_name!r} ({config.study.storage}): trial {best.number}, "
        f"{config.study.metric} = {best.value:.4f}, params {best.params}.\n"
        f"# Run it: hificl train --config {path}\n"
    )
    atomic_write_text(path, header + yaml.safe_dump(best_values(study, config), sort_keys=False))
    return path


def _figures(study: optuna.Study, out: Path, notes: list[str]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots = {
        "history.png": lambda: ovm.plot_optimization_history(study),
        "importances.png": lambda: ovm.plot_param_importances(study),
        "contour_n_tokens_rank.png": lambda: ovm.plot_contour(study, params=["n_tokens", "rank"]),
    }
    written = []
    for name, plot in plots.items():
        if name != "history.png" and len(complete) < 2:
            notes.append(f"{name} skipped: {len(complete)} complete trial(s), it needs 2.")
            continue
        if name.startswith("contour") and importlib.util.find_spec("scipy") is None:
            notes.append(f"{name} skipped: Optuna's plot_contour needs scipy (pip install scipy).")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = plot()
        except Exception as err:  # e.g. importances of a parameter that never varied
            notes.append(f"{name} skipped: {type(err).__name__}: {err}")
            plt.close("all")
            continue
        figure: Any = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        figure.savefig(out / name, dpi=120, bbox_inches="tight")
        plt.close(figure)
        written.append(str(out / name))
    return written
