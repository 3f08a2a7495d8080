"""One experiment, end to end: load the frozen LMM, attach a method, train it, evaluate it, return a result row.

The CLI's train/evaluate commands, the ablation runner and the Optuna objective all call `run_experiment`, so
a number in a table and a number from a single command come from the same code.
"""

from __future__ import annotations

import hashlib
import json
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import transformers

from hificl import __version__
from hificl.config import deep_merge, from_dict, to_dict
from hificl.data.datamodule import DataConfig, ICLDataModule
from hificl.data.official import load_task
from hificl.data.tasks import task_spec
from hificl.lightning.module import ICLApproxModule, TrainConfig
from hificl.methods.io import load_method, save_method
from hificl.methods.presets import resolve_preset
from hificl.methods.registry import build_method
from hificl.models.loading import load_model


@dataclass
class ExperimentConfig:
    model: str = "base-model"
    preset: str = "hificl"
    method: dict[str, Any] = field(default_factory=dict)  # overrides of the preset's method settings
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    dtype: str = "float32"
    attn_implementation: str = "sdpa"
    output_dir: str | None = None  # where the trained method and predictions are written, if set
    adapter: str | None = None  # evaluate this saved method instead of training one
    validate: bool = False  # evaluate after every epoch ("val/<metric>" in callback_metrics; Optuna prunes on it)
    progress: bool = True


def experiment_config(values: dict[str, Any]) -> ExperimentConfig:
    """Defaults < the preset's (method settings, lr, weight decay, shots) < the user's values.

    `data.seed` (training subset, demonstrations, shuffling) follows `seed` unless set; the evaluation subset has
    its own `data.eval_seed`, so every seed is scored on the same questions. The method settings are resolved in
    full, so configs that mean the same experiment are equal (the rank sweep's r=8 is the main table's HiFICL)
    and every result row names each setting it ran with."""
    preset = resolve_preset(values.get("preset", ExperimentConfig.preset))
    from_preset: dict[str, Any] = {
        "method": preset.get("config", {}),
        "train": {**{k: preset[k] for k in ("lr", "weight_decay") if preset.get(k) is not None}, **preset["train"]},
        "data": {"eval_shots": preset.get("shots", 0)},
    }
    config = from_dict(ExperimentConfig, deep_merge(from_preset, values), "experiment")
    if "seed" not in (values.get("data") or {}):  # one seed drives init, training subset and demonstrations
        config.data.seed = config.seed
    return config


def synthetic_root(model_dir: str | Path) -> Path:
    """The embedded benchmark lives beside the embedded model it was made for."""
    return Path(model_dir).resolve().parent / "synthetic"


def chair_vocabulary(spec_synthetic: bool, records: list[Any]) -> dict[str, list[str]] | None:
    """COCO's 80 categories by default; the synthetic benchmark's own object names for its caption task."""
    if not spec_synthetic:
        return None
    names = sorted({o for r in records for o in r.objects})
    return {name: [name] for name in names}


def _digest(ids: list[int]) -> str:
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]


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


def run_experiment(config: ExperimentConfig, callbacks: list[L.Callback] | None = None) -> dict[str, Any]:
    """Train (if the preset has a method) and evaluate; the returned row carries config, seed, versions,
    model fingerprint, metrics and timings."""
    L.seed_everything(config.seed, workers=True, verbose=False)
    torch.use_deterministic_algorithms(False)
    preset = resolve_preset(config.preset)
    spec = task_spec(config.data.task)
    loaded = load_model(config.model, dtype=config.dtype, attn_implementation=config.attn_implementation)
    data_cfg = config.data
    if spec.synthetic and not data_cfg.data_root:
        data_cfg = DataConfig(**{**to_dict(data_cfg), "data_root": str(synthetic_root(config.model))})
    family, processor = loaded.family, loaded.processor
    method = None
    if config.adapter:
        method = load_method(config.adapter, loaded.model)
    elif preset.get("method"):
        values = {**preset.get("config", {}), **config.method}
        method = build_method(preset["method"], loaded.model, values, seed=config.seed)
    datamodule = ICLDataModule(
        data_cfg,
        processor,
        image_token=family.image_placeholder,
        to_inputs=lambda texts, images: family.processor_inputs(processor, texts, images),
        teacher_shots=method.teacher_shots if method is not None and not config.adapter else 0,
    )
    datamodule.setup()
    if method is not None:
        method.attach(loaded.model)
    vocabulary = None
    if spec.metric == "caption":
        vocabulary = chair_vocabulary(spec.synthetic, datamodule.train_records + datamodule.eval_records)
        if spec.synthetic and not datamodule.train_records:
            vocabulary = chair_vocabulary(True, load_task(spec.files, data_cfg.data_root, spec.train_split))
    module = ICLApproxModule(loaded.model, loaded.processor.tokenizer, method, spec, config.train, vocabulary)
    trainer = L.Trainer(
        max_epochs=config.train.epochs_for(len(datamodule.train_records)),
        accumulate_grad_batches=config.train.accumulate,
        precision=config.train.precision,
        strategy=config.train.strategy,
        devices=config.train.devices,
        accelerator=config.train.accelerator,
        gradient_clip_val=config.train.gradient_clip,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=config.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if config.validate else 0,
        callbacks=callbacks or [],
        deterministic=False,
    )
    train_time = 0.0
    try:
        if method is not None and not config.adapter:
            start = time.perf_counter()
            val = datamodule.val_dataloader() if config.validate else None
            trainer.fit(module, train_dataloaders=datamodule.train_dataloader(), val_dataloaders=val)
            train_time = time.perf_counter() - start
        trainer.test(module, dataloaders=datamodule.test_dataloader(), verbose=False)
    finally:  # a pruned or failed trial must leave the model as it found it
        if method is not None:
            method.detach()
    row = {
        "task": spec.name,
        "preset": config.preset,
        "method": preset.get("method") or config.preset,
        "seed": config.seed,
        "metrics": module.test_metrics,
        "hallucinated_objects": module.hallucinated_objects,
        "num_trainable": method.num_trainable() if method else 0,
        "train_size": len(datamodule.train_records) if method else 0,
        "eval_size": len(datamodule.eval_records),
        "train_steps": int(trainer.global_step) if method else 0,
        "train_time_s": train_time,
        "step_time_s": statistics.median(module.step_times) if module.step_times else 0.0,
        "eval_time_s": module.eval_time,
        "eval_ms_per_sample": 1000 * module.eval_time / max(1, len(datamodule.eval_records)),
        "train_ids_digest": _digest(datamodule.subset_record()["train_ids"]),
        "eval_ids_digest": _digest(datamodule.subset_record()["eval_ids"]),
        "config": to_dict(config),
        "model_fingerprint": loaded.fingerprint,
        "versions": {
            "hificl": __version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "lightning": L.__version__,
            "python": platform.python_version(),
        },
    }
    row["global_rank"] = trainer.global_rank
    if config.output_dir:
        predictions = gather_predictions(module.predictions, trainer.world_size)
        if trainer.is_global_zero:
            out = Path(config.output_dir)
            if method is not None:
                save_method(method, out / "method", loaded.model, extra={"preset": config.preset, "task": spec.name})
            out.mkdir(parents=True, exist_ok=True)
            (out / "predictions.json").write_text(json.dumps(predictions, indent=1))
            (out / "result.json").write_text(json.dumps(row, indent=2))
        trainer.strategy.barrier()
    return row
