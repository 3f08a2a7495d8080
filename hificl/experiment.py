"""One experiment, end to end: build it from the resolved config, train, evaluate, return a typed result row.

    experiment_config(values)   defaults < preset < the user's values: the resolved ExperimentConfig
    build_experiment(config)    model, DataModule, method, LightningModule, Trainer: each built once
    run_experiment(config)      fit (if there is something to train), test, `result_row`, outputs

The CLI's train/evaluate commands, the ablation runner and the Optuna objective all call `run_experiment`, so
a number in a table and a number from a single command come from the same code.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import transformers

from hificl import __version__
from hificl.config import deep_merge, from_dict, to_dict
from hificl.data.datamodule import DataConfig, ICLDataModule
from hificl.data.layout import resolve_data_root
from hificl.data.tasks import task_spec
from hificl.errors import ConfigError, DataError
from hificl.files import atomic_write_text
from hificl.lightning.callbacks import RunTimer
from hificl.lightning.checkpoints import resume_path
from hificl.lightning.loggers import METRICS_FILE, check_logger, prepend_rows, rows_before
from hificl.lightning.module import ICLApproxModule, TrainConfig
from hificl.lightning.tracking import tracking_for
from hificl.methods.base import Method
from hificl.methods.io import load_method, save_method
from hificl.methods.presets import resolve_preset
from hificl.methods.registry import build_method
from hificl.models.loading import LoadedModel, load_model
from hificl.outputs import OutputDir, staged_outputs
from hificl.preflight import check_images
from hificl.results import Environment, ResultRow
from hificl.validation import check_experiment

#: The TrainConfig fields a preset may set (TrainConfig's own defaults are TRAINING_DEFAULTS).
PRESET_TRAIN_KEYS = ("lr", "weight_decay", "optimizer", "scheduler", "warmup_ratio")


@dataclass
class ExperimentConfig:
    model: str = "base-model"
    preset: str = "hificl"
    method_name: str | None = None  # the registry method the preset trains (None: zero-shot / ICL); from the preset
    method: dict[str, Any] = field(default_factory=dict)  # the method's settings: the preset's < the user's
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    dtype: str = "float32"
    attn_implementation: str = "sdpa"
    output_dir: str | None = None  # where the trained method and predictions are written, if set
    overwrite: bool = False  # replace the package's own files in an output_dir that already holds some
    run_dir: str | None = None  # the run's logs and per-epoch checkpoints; a killed run resumes from it (if set)
    adapter: str | None = None  # evaluate this saved method instead of training one
    validate: bool = False  # evaluate after every epoch ("val/<metric>" in callback_metrics; Optuna prunes on it)
    progress: bool = True


def experiment_config(values: dict[str, Any]) -> ExperimentConfig:
    """Defaults < the preset's (method and its settings, optimisation settings, shots) < the user's values.

    The one place the preset is resolved. `data.seed` (training subset, demonstrations, shuffling) follows
    `seed` unless set; the evaluation subset has its own `data.eval_seed`, so every seed is scored on the same
    questions. The method settings are resolved in full, so configs that mean the same experiment are equal (the
    rank sweep's r=8 is the main table's HiFICL) and every result row names each setting it ran with."""
    preset = resolve_preset(config_preset(values))
    from_preset: dict[str, Any] = {
        "method_name": preset.get("method"),
        "method": preset.get("config", {}),
        "train": {**{k: preset[k] for k in PRESET_TRAIN_KEYS if preset.get(k) is not None}, **preset["train"]},
        "data": {"eval_shots": preset.get("shots", 0)},
    }
    if values.get("method_name", from_preset["method_name"]) != from_preset["method_name"]:
        raise ConfigError(
            f"experiment.method_name {values['method_name']!r} is not what preset {config_preset(values)!r} trains "
            f"({from_preset['method_name']!r}); choose the method through `preset`."
        )
    config = from_dict(ExperimentConfig, deep_merge(from_preset, values), "experiment")
    if "seed" not in (values.get("data") or {}):  # one seed drives init, training subset and demonstrations
        config.data.seed = config.seed
    check_experiment(config)
    return config


def config_preset(values: dict[str, Any]) -> str:
    return str(values.get("preset", ExperimentConfig.preset))


def synthetic_root(model_dir: str | Path) -> Path:
    """The embedded benchmark lives beside the embedded model it was made for."""
    return Path(model_dir).resolve().parent / "synthetic"


def check_data_root(config: ExperimentConfig) -> None:
    """The data a run reads is on disk: checked before its model loads, and for every cell of a matrix or study
    before the first run starts (a missing root would otherwise fail each run after a process start and a load)."""
    if config.data.data_root or not task_spec(config.data.task).synthetic:
        resolve_data_root(config.data.data_root)  # the configured root, else $HIFICL_DATA_ROOT
        return
    root = synthetic_root(config.model)
    if not root.is_dir():
        raise DataError(
            f"The synthetic benchmark of base model {config.model} is missing: expected it at {root}, which "
            f"`hificl base-model --out {config.model}` writes with the model (or set data.data_root)."
        )


@dataclass
class Experiment:
    """The parts of one experiment, each built once from the resolved config."""

    config: ExperimentConfig
    loaded: LoadedModel
    datamodule: ICLDataModule
    method: Method | None  # attached to loaded.model; None for zero-shot and k-shot ICL
    module: ICLApproxModule
    trainer: L.Trainer
    timer: RunTimer

    @property
    def trains(self) -> bool:
        return is_trained(self.config, self.method)

    @property
    def resume_from(self) -> str | None:
        """The last checkpoint a killed attempt of this run left in its run_dir (checked to be this run's)."""
        return resume_path(Path(self.config.run_dir)) if self.trains and self.config.run_dir else None


def check_data_roots(runs: list[dict[str, Any]]) -> None:
    """`check_data_root` once per distinct (model, task, data root) of a batch of runs, before the first starts."""
    seen = set()
    for values in runs:
        data = values.get("data") or {}
        key = (str(values.get("model")), str(data.get("task")), str(data.get("data_root")))
        if key not in seen:
            seen.add(key)
            check_data_root(experiment_config(values))


def build_experiment(config: ExperimentConfig, callbacks: list[L.Callback] | None = None) -> Experiment:
    """Seed, then load the frozen LMM and build the DataModule, the method, the LightningModule and the Trainer."""
    check_logger(config.train.logger)  # before minutes of model loading
    check_data_root(config)
    L.seed_everything(config.seed, workers=True, verbose=False)
    torch.use_deterministic_algorithms(False)
    loaded = load_model(config.model, dtype=config.dtype, attn_implementation=config.attn_implementation)
    method = build_method_for(config, loaded)
    teacher_shots = method.teacher_shots if method is not None and is_trained(config, method) else 0
    datamodule = build_datamodule(config, loaded, teacher_shots)
    if method is not None:
        method.attach(loaded.model)
    module = ICLApproxModule(loaded.model, loaded.processor.tokenizer, method, datamodule.spec, config.train)
    timer = RunTimer()
    trainer = build_trainer(config, [timer, *(callbacks or [])], trains=is_trained(config, method))
    return Experiment(config, loaded, datamodule, method, module, trainer, timer)


def is_trained(config: ExperimentConfig, method: Method | None) -> bool:
    """A method is trained unless there is none (zero-shot, k-shot ICL) or a saved adapter is evaluated."""
    return method is not None and not config.adapter


def build_datamodule(config: ExperimentConfig, loaded: LoadedModel, teacher_shots: int) -> ICLDataModule:
    """`teacher_shots`: the method's (its one teacher switch); teacher rows are built only when it trains."""
    family, processor = loaded.family, loaded.processor
    return ICLDataModule(
        config.data,
        processor,
        image_token=family.image_placeholder,
        to_inputs=lambda texts, images: family.processor_inputs(processor, texts, images),
        teacher_shots=teacher_shots,
        synthetic_root=synthetic_root(config.model),
    )


def build_method_for(config: ExperimentConfig, loaded: LoadedModel) -> Method | None:
    """The saved adapter, a fresh method of the preset (initialised from the seed), or None; not yet attached."""
    if config.adapter:
        return load_method(config.adapter, loaded.model)
    if config.method_name:
        return build_method(config.method_name, loaded.model, config.method, seed=config.seed)
    return None


def build_trainer(config: ExperimentConfig, callbacks: list[L.Callback], trains: bool) -> L.Trainer:
    """The one Trainer of a run: loggers, checkpointing and extra callbacks join here.

    Loggers always (`train.logger`, one row per step); a run that trains adds the learning-rate monitor, the
    method's diagnostics and, with a run_dir, a method-only checkpoint every epoch (hificl.lightning.tracking)."""
    train = config.train
    tracking = tracking_for(config, task_spec(config.data.task).name, trains)
    return L.Trainer(
        max_epochs=train.epochs_for(config.data.train_size),
        accumulate_grad_batches=train.accumulate,
        precision=train.precision,  # type: ignore[arg-type]  # a string Lightning validates
        strategy=train.strategy,
        devices=train.devices,
        accelerator=train.accelerator,
        gradient_clip_val=train.gradient_clip,
        logger=tracking.loggers or False,
        log_every_n_steps=1,
        enable_checkpointing=False,  # hificl.lightning.checkpoints saves the method only, when the run has a directory
        enable_progress_bar=config.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if config.validate else 0,
        callbacks=[*callbacks, *tracking.callbacks],
        deterministic=False,
    )


def run_experiment(config: ExperimentConfig, callbacks: list[L.Callback] | None = None) -> ResultRow:
    """Train (if the preset has a method and no saved adapter is given) and evaluate; return the result row.
    The output directory is checked before the model loads and written as one unit (hificl.outputs)."""
    with staged_outputs(config.output_dir, overwrite=config.overwrite) as outputs:
        return _run(config, callbacks, outputs)


def _run(config: ExperimentConfig, callbacks: list[L.Callback] | None, outputs: OutputDir | None) -> ResultRow:
    experiment = build_experiment(config, callbacks)
    trainer, module, datamodule = experiment.trainer, experiment.module, experiment.datamodule
    datamodule.setup()  # its records' images are checked before the first training step
    check_images(datamodule.train_records if experiment.trains else [])
    check_images(datamodule.val_records if config.validate else [])
    check_images(datamodule.eval_records)
    earlier = earlier_metrics(experiment)
    with detached_after(experiment.method):
        if experiment.trains:
            trainer.fit(module, datamodule=datamodule, ckpt_path=experiment.resume_from)
        trainer.test(module, datamodule=datamodule, verbose=False)
    if earlier:
        prepend_rows(Path(str(config.run_dir)) / METRICS_FILE, earlier)
    row = result_row(experiment)
    if config.output_dir:
        write_outputs(experiment, row, outputs)
    return row


def earlier_metrics(experiment: Experiment) -> list[dict[str, str]]:
    """A resumed run's logged steps from before its checkpoint (the killed attempt's metrics.csv), kept."""
    if experiment.resume_from is None or experiment.config.train.logger != "csv":
        return []
    step = int(torch.load(experiment.resume_from, map_location="cpu", weights_only=False)["global_step"])
    return rows_before(Path(str(experiment.config.run_dir)) / METRICS_FILE, step)


@contextmanager
def detached_after(method: Method | None) -> Iterator[None]:
    """A pruned or failed trial must leave the model as it found it."""
    try:
        yield
    finally:
        if method is not None:
            method.detach()


def result_row(experiment: Experiment) -> ResultRow:
    config, dm, module, trainer = experiment.config, experiment.datamodule, experiment.module, experiment.trainer
    trained = experiment.trains
    ids = dm.subset_record()
    return ResultRow(
        task=dm.spec.name,
        preset=config.preset,
        method=config.method_name or config.preset,
        seed=config.seed,
        metrics=module.test_metrics,
        hallucinated_objects=module.hallucinated_objects,
        num_trainable=experiment.method.num_trainable() if experiment.method else 0,
        train_size=len(dm.train_records) if trained else 0,
        eval_size=len(dm.eval_records),
        train_steps=int(trainer.global_step) if trained else 0,
        timings=experiment.timer.timings(len(dm.eval_records)),
        train_ids_digest=_digest(ids["train_ids"]),
        eval_ids_digest=_digest(ids["eval_ids"]),
        config=to_dict(config),
        model_fingerprint=experiment.loaded.fingerprint,
        environment=environment(trainer, module.device),
    )


def environment(trainer: L.Trainer, device: torch.device) -> Environment:
    name = f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else device.type
    versions = {
        "hificl": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "lightning": L.__version__,
        "python": platform.python_version(),
    }
    return Environment(versions, torch.get_num_threads(), name, trainer.world_size, trainer.global_rank)


def _digest(ids: list[int]) -> str:
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]


def write_outputs(experiment: Experiment, row: ResultRow, outputs: OutputDir | None) -> None:
    """The trained method, every rank's predictions and the row, staged by rank 0, then committed as one unit."""
    trainer = experiment.trainer
    predictions = gather_predictions(experiment.module.predictions, trainer.world_size)
    if trainer.is_global_zero and outputs is not None:
        method, model, out = experiment.method, experiment.loaded.model, outputs.stage
        if method is not None:
            card: dict[str, Any] = {"preset": row.preset, "task": row.task, "metrics": row.metrics}
            card |= {"train_size": row.train_size, "eval_size": row.eval_size, "experiment": row.config}
            save_method(method, out / "method", model, extra=card)
        atomic_write_text(out / "predictions.json", json.dumps(predictions, indent=1))
        atomic_write_text(out / "result.json", json.dumps(row.to_dict(), indent=2))
        outputs.commit()
    trainer.strategy.barrier()


def gather_predictions(predictions: list[dict[str, Any]], world_size: int) -> list[dict[str, Any]]:
    """Every rank's predictions, once each (a DistributedSampler pads uneven sets with repeats)."""
    if world_size <= 1:
        return predictions
    gathered: list[list[dict[str, Any]]] = [[] for _ in range(world_size)]
    torch.distributed.all_gather_object(gathered, predictions)
    unique: dict[tuple[Any, Any], dict[str, Any]] = {}
    for part in gathered:
        for p in part:
            unique.setdefault((p.get("question_id"), p.get("image_id")), p)
    return list(unique.values())
