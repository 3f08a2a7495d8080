"""Experiment tracking through Lightning's loggers: where a run's metrics go, chosen by `train.logger`.

    csv          (default) `<run dir>/metrics.csv`: one row per logged step (losses, learning rate, diagnostics)
                 and per epoch (validation metrics), plus `hparams.yaml`; no extra package
    tensorboard  `<run dir>/tensorboard/`; needs `tensorboard` (or `tensorboardX`)
    mlflow       the MLflow tracking URI in MLFLOW_TRACKING_URI (default `<run dir>/mlruns`); needs `mlflow`
    wandb        Weights & Biases (WANDB_* variables, `wandb login`); needs `wandb`
    none         nothing is logged

The run directory is the experiment's `run_dir` when it has one (the matrix gives every run one), else
Lightning's `lightning_logs/<preset>-<task>/version_N`.
An uninstalled backend fails when the experiment starts, before the model loads, in one sentence.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger

from hificl.errors import ConfigError
from hificl.files import atomic_write_text

LOGGERS = ("csv", "tensorboard", "mlflow", "wandb", "none")
#: backend -> the packages that provide it (any one suffices)
_NEEDS = {"tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",), "wandb": ("wandb",)}
METRICS_FILE = "metrics.csv"
#: Where runs without a run_dir log: Lightning's own default, relative to the working directory.
DEFAULT_ROOT = Path("lightning_logs")


def check_logger(kind: str) -> None:
    """Refuse an unknown backend or one whose package is not installed."""
    if kind not in LOGGERS:
        raise ConfigError(f"train.logger must be one of {list(LOGGERS)}, got {kind!r}.")
    packages = _NEEDS.get(kind, ())
    if packages and not any(importlib.util.find_spec(p) for p in packages):
        raise ConfigError(
            f"train.logger={kind} needs the {packages[0]} package, which is not installed: pip install {packages[0]}."
        )


def build_loggers(kind: str, run_dir: str | None, name: str) -> list[Logger]:
    """The run's loggers (an empty list for `none`)."""
    check_logger(kind)
    if kind == "none":
        return []
    if run_dir is None:  # Lightning's layout: a new version directory per run
        root, logger_name, version = DEFAULT_ROOT, name, None
    else:
        root, logger_name, version = Path(run_dir), "", ""
    if kind == "csv":
        return [CSVLogger(str(root), name=logger_name, version=version)]
    if kind == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return [TensorBoardLogger(str(root / "tensorboard"), name=logger_name, version=version)]
    if kind == "mlflow":
        from lightning.pytorch.loggers import MLFlowLogger

        uri = os.environ.get("MLFLOW_TRACKING_URI") or (root / "mlruns").resolve().as_uri()
        return [MLFlowLogger(experiment_name=name, tracking_uri=uri)]
    from lightning.pytorch.loggers import WandbLogger

    return [WandbLogger(project=os.environ.get("WANDB_PROJECT", "hificl"), name=name, save_dir=str(root))]


def metrics_file(loggers: list[Logger]) -> Path | None:
    """The CSV logger's metrics file, once the run has written it."""
    for logger in loggers:
        if isinstance(logger, CSVLogger):
            path = Path(logger.log_dir) / METRICS_FILE
            return path if path.is_file() else None
    return None


def rows_before(path: Path, step: int) -> list[dict[str, str]]:
    """The rows of a killed attempt's metrics file logged before `step` (the checkpoint a resumed run continues
    from); Lightning's CSV logger deletes that file when the resumed run starts logging."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if row.get("step", "").isdigit() and int(row["step"]) < step]


def prepend_rows(path: Path, earlier: list[dict[str, str]]) -> None:
    """Rewrite `path` as `earlier` followed by its own rows, under the union of both headers (in first-seen order),
    so a resumed run's metrics.csv holds every step once, as an uninterrupted run's does."""
    if not earlier or not path.is_file():
        return
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        later, header = list(reader), list(reader.fieldnames or [])
    fields = list(dict.fromkeys([*(k for row in earlier for k in row), *header]))
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows([*earlier, *later])
    atomic_write_text(path, buffer.getvalue())
