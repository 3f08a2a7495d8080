"""Experiment tracking: every matrix run keeps a metrics.csv with per-step losses (each loss term in its own
column), the learning rate and the method's own diagnostics; backends by train.logger."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import yaml

from hificl.ablation import run_matrix
from hificl.cli import main
from hificl.experiment import experiment_config, run_experiment
from hificl.lightning.diagnostics import method_diagnostics
from hificl.methods import registry
from hificl.methods.presets import PRESETS, resolve_preset
from hificl.models.layers import AttentionShape
from hificl.results import ResultsStore

#: preset -> (loss terms it logs besides train/loss, diagnostics it logs)
METHODS = {
    "hificl": ({"train/ce"}, {"diag/key_norm/layer_0", "diag/value_norm/layer_1", "diag/key_norm/mean"}),
    "hificl+teacher": ({"train/ce", "train/align"}, {"diag/key_norm/layer_0"}),
    "mimic": ({"train/ce", "train/align"}, {"diag/f_weight_norm/layer_0", "diag/f_bias_mean/layer_1"}),
    "live": ({"train/ce", "train/kl"}, {"diag/alpha/layer_0", "diag/alpha/layer_1", "diag/vector_norm/mean"}),
    "lora": (set(), set()),
}


@pytest.mark.parametrize("preset", [p for p, v in PRESETS.items() if v["method"] not in (None, "lora")])
def test_every_trained_preset_has_finite_diagnostics(preset: str) -> None:
    """Each virtual-token preset's diagnostics are computed from the parameters it really has (the matrix's
    mimic-shared-query cells once failed here: that variant has a constant mu and no f)."""
    values = resolve_preset(preset)
    name = values["method"]
    shape = AttentionShape(num_layers=2, num_heads=2, num_kv_heads=1, head_dim=8, hidden_size=16)
    config = registry.make_config(name, values["config"])
    diagnostics = method_diagnostics(registry.METHODS[name](config, shape, torch.Generator().manual_seed(0)))
    assert diagnostics and all(math.isfinite(v) for v in diagnostics.values())
    assert {k.rsplit("/", 1)[1] for k in diagnostics} == {"layer_0", "layer_1", "mean"}
    if preset == "mimic-shared-query":
        assert diagnostics["diag/mu_mean/layer_0"] == pytest.approx(0.5)  # sigmoid(0) at initialisation


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_every_matrix_run_keeps_per_step_losses_lr_and_diagnostics(tiny_world: Path, tmp_path: Path) -> None:
    spec = {
        "defaults": {
            "data": {"train_size": 8, "eval_size": 4, "batch_size": 4, "eval_batch_size": 4},
            "train": {"epochs": 2},  # 2 steps per epoch, 4 in all
        },
        "tasks": ["syn-vqa"],
        "seeds": [0],
        "groups": {"main": {"variants": {p: {"preset": p} for p in [*METHODS, "zero-shot"]}}},
    }
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(spec))
    rows = run_matrix(tmp_path / "m.yaml", tmp_path / "results", model=str(tiny_world / "model"))
    store = ResultsStore(tmp_path / "results")
    assert not (tmp_path / "results" / "work").exists() or not any((tmp_path / "results" / "work").iterdir())
    for cell in rows:
        row = cell.result
        metrics = store.runs / cell.run_id / "metrics.csv"
        if row.preset == "zero-shot":
            assert [r["test/accuracy"] for r in _rows(metrics)] == [str(row.metrics["accuracy"])]
            continue
        terms, diagnostics = METHODS[row.preset]
        table = _rows(metrics)
        steps = [r for r in table if r.get("train/loss")]
        assert [int(r["step"]) for r in steps] == list(range(4)) == list(range(row.train_steps))
        assert all(float(r["train/loss"]) > 0 for r in steps)
        for term in terms:  # each loss term separately, every step
            assert all(r[term] for r in steps), term
        for name in diagnostics:
            assert all(r[name] for r in steps), name
        lrs = [float(v) for r in table for k, v in r.items() if k.startswith("lr-AdamW") and v]
        assert len(lrs) >= 4 and lrs[0] < max(lrs)  # the cosine schedule's warm-up, step by step
    live = next(c for c in rows if c.result.preset == "live")
    table = _rows(store.runs / live.run_id / "metrics.csv")
    alpha = [float(r["diag/alpha/layer_0"]) for r in table if r.get("train/loss")]
    assert len(alpha) == 4 and len(set(alpha)) == 4  # LIVE's alpha is learned: a new value every step


def test_train_logger_none_writes_no_metrics_and_an_uninstalled_backend_is_one_sentence(
    tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = {
        "model": str(tiny_world / "model"),
        "preset": "hificl",
        "progress": False,
        "run_dir": str(tmp_path / "run"),
        "data": {"task": "syn-vqa", "train_size": 4, "eval_size": 2, "batch_size": 4, "eval_batch_size": 2},
        "train": {"epochs": 1, "logger": "none"},
    }
    run_experiment(experiment_config(values))
    assert not (tmp_path / "run" / "metrics.csv").exists()
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()  # no logger, still resumable
    for backend, package in (("mlflow", "mlflow"), ("wandb", "wandb"), ("tensorboard", "tensorboard")):
        code = main(["train", "--set", f"model={tiny_world / 'model'}", "--set", f"train.logger={backend}"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.count("\n") == 0
        assert f"train.logger={backend} needs the {package} package" in err
    assert main(["train", "--set", "train.logger=neptune"]) == 2
    assert "train.logger must be one of" in capsys.readouterr().err
