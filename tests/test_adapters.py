"""Saved methods where users load them: LoRA in peft's format (PeftModel.from_pretrained alone gives the same
logits), a model card and the re-runnable experiment beside every trained method."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from hificl.cli import main
from hificl.config import read_yaml, to_dict
from hificl.experiment import experiment_config, run_experiment
from hificl.methods.exports import PLACE
from hificl.methods.io import load_method, save_method
from hificl.methods.registry import build_method
from tests.models import IMAGE_SIZE, image_prompt, llava_qwen2


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.stack([image_prompt(g, 6), image_prompt(g, 6)])
    pixels = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels}


def _trained_lora(model: torch.nn.Module) -> torch.nn.Module:
    """A LoRA whose B is not zero (as after training), so the adapter changes the logits."""
    method = build_method("lora", model, {"rank": 4, "alpha": 8.0, "dropout": 0.0}, seed=0)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in method.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return method


@pytest.mark.parametrize("attached", [True, False])
def test_a_saved_lora_loads_with_peft_alone_to_the_same_logits(tmp_path: Path, attached: bool) -> None:
    model, inputs = llava_qwen2(), _inputs()
    with torch.no_grad():
        base = model(**inputs).logits
    method = _trained_lora(model)
    method.attach(model)
    adapted_by_us = sorted(n for n, m in model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer"))
    with torch.no_grad():
        ours = model(**inputs).logits
    if not attached:  # saving attaches it for the moment and leaves the model as it found it
        method.detach()
    save_method(method, tmp_path / "lora", model)
    assert attached == any(hasattr(m, "lora_A") for m in model.modules())
    method.detach()
    assert (ours - base).abs().max() > 1e-3  # the adapter matters

    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 4, 8.0)
    assert sorted(config["target_modules"]) == adapted_by_us and adapted_by_us
    peft_model = PeftModel.from_pretrained(llava_qwen2(), str(tmp_path / "lora")).eval()  # a fresh base model
    adapted_by_peft = sorted(
        n.removeprefix("base_model.model.") for n, m in peft_model.named_modules() if hasattr(m, "lora_A")
    )
    assert adapted_by_peft == adapted_by_us
    with torch.no_grad():
        theirs = peft_model(**inputs).logits
    assert torch.allclose(theirs, ours, atol=1e-6, rtol=0)
    # the package's own files load too, and the model is left as it was
    reloaded = load_method(tmp_path / "lora", model)
    reloaded.attach(model)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, ours)
    reloaded.detach()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, base)


@pytest.mark.parametrize("preset", ["hificl", "mimic", "live", "lora"])
def test_a_trained_method_carries_a_model_card_and_its_experiment(
    tiny_world: Path, tmp_path: Path, preset: str
) -> None:
    values = {
        "model": str(tiny_world / "model"),
        "preset": preset,
        "progress": False,
        "output_dir": str(tmp_path / "run"),
        "data": {"task": "syn-vqa", "train_size": 8, "eval_size": 4, "batch_size": 4, "eval_batch_size": 4},
        "train": {"epochs": 1},
    }
    row = run_experiment(experiment_config(values))
    saved = tmp_path / "run" / "method"
    meta = json.loads((saved / "method.json").read_text())
    assert meta["base_model"] == row.model_fingerprint and meta["metrics"] == row.metrics
    card = (saved / "README.md").read_text()
    assert card.startswith("---\nbase_model: ") and f"library_name: {'peft' if preset == 'lora' else 'hificl'}" in card
    assert f"`{tiny_world / 'model'}`" in card and row.model_fingerprint["weights_digest"] in card
    assert f"Task: syn-vqa; trained on {row.train_size} examples, seed 0" in card and row.train_size == 8
    assert f"accuracy {row.metrics['accuracy']:.4f}" in card and "on 4 evaluation examples" in card
    assert (saved / "adapter_config.json").is_file() is (preset == "lora")
    # the card's command re-runs the same experiment: experiment.yaml is the resolved config, less where it wrote
    again = to_dict(experiment_config(read_yaml(saved / "experiment.yaml")))
    assert {k: v for k, v in again.items() if k not in PLACE} == {k: v for k, v in row.config.items() if k not in PLACE}
    assert main(["evaluate", "--adapter", str(saved), "--config", str(saved / "experiment.yaml")]) == 0


def test_a_method_saved_again_replaces_its_exports_but_not_a_foreign_file(tmp_path: Path) -> None:
    from hificl.errors import AdapterError
    from hificl.methods.exports import EXPORTS

    model = llava_qwen2()
    method = _trained_lora(model)
    extra = {"preset": "lora", "task": "syn-vqa", "experiment": {"preset": "lora", "seed": 0}}
    save_method(method, tmp_path / "lora", model, extra=extra)
    assert set(EXPORTS) <= {p.name for p in (tmp_path / "lora").iterdir()}  # peft files, card, experiment
    first = (tmp_path / "lora" / "adapter_model.safetensors").read_bytes()
    with torch.no_grad():
        next(p for n, p in method.named_parameters() if "lora_B" in n).add_(1.0)
    save_method(method, tmp_path / "lora", model, extra=extra)  # its own exports are no foreign files
    assert (tmp_path / "lora" / "adapter_model.safetensors").read_bytes() != first
    (tmp_path / "lora" / "notes.txt").write_text("mine")
    with pytest.raises(AdapterError, match=r"holds files that are not a saved method \(\['notes.txt'\]\)"):
        save_method(method, tmp_path / "lora", model, extra=extra)
    assert (tmp_path / "lora" / "notes.txt").read_text() == "mine"
