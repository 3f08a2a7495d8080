"""`make bench` runs every line end to end on a tiny model and reports each ratio beside its target.
Timings are benchmarks, never asserted here: only that every line is measured and every ratio is reported."""

from __future__ import annotations

import json
import math

import torch

from hificl import bench
from tests import family_models
from tests.models import mistral


def test_every_line_runs_and_every_ratio_is_reported(tmp_path, monkeypatch) -> None:
    torch.set_num_threads(1)
    model, _ = family_models.tiny()
    monkeypatch.setattr(bench, "mistral_layer", lambda device, dtype: mistral().to(device=device, dtype=dtype))
    out = tmp_path / "bench.json"
    results = bench.run_bench(model, out=out, prompt_len=8, repeats=1)
    assert results["clock"] == "thread cpu time"
    assert json.loads(out.read_text())["inference"] == results["inference"]
    flat = {**results["inference"], **results["training"], **results["primitive"], **results["paper_scale"]}
    for key in (*bench.TARGETS, *bench.REPORTED):
        assert math.isfinite(flat[key]) and flat[key] > 0, key
    text = bench.summary(results)
    for key in (*bench.TARGETS, *bench.REPORTED):
        assert key in text
    assert "mimic_vs_hificl_step" not in bench.TARGETS  # a property of the methods, reported as measured
    assert results["paper_scale"]["shape"]["hidden"] == 4096  # the line's label; the layer itself is patched


def test_paper_scale_layer_has_mistral_7b_width() -> None:
    with torch.device("meta"):
        layer = bench.mistral_layer(torch.device("meta"), torch.float32)
    text = layer.config
    assert (text.hidden_size, text.num_attention_heads, text.num_key_value_heads, text.head_dim) == (4096, 32, 8, 128)
    assert text.intermediate_size == 14336 and text.num_hidden_layers == 1
