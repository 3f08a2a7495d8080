"""What a saved method carries besides its own files, so users can load it where they work and know what it is.

Beside `method.safetensors` + `method.json` (hificl.methods.io, with the base model's fingerprint):
- LoRA also in peft's format, `adapter_config.json` + `adapter_model.safetensors`, which
  `peft.PeftModel.from_pretrained(base_model, directory)` loads with no hificl installed;
- every method a model card `README.md` (base model, method, task, data size, metrics, the command that made it)
  and, when the experiment is known, `experiment.yaml`: the resolved config that command re-runs.

`write_exports` writes into the save's temporary directory, so these files appear atomically with the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import save_file
from torch import nn

from hificl.methods.base import Method

PEFT_CONFIG, PEFT_WEIGHTS, CARD, EXPERIMENT = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "README.md",
    "experiment.yaml",
)
#: Files `write_exports` may write (a re-save replaces them along with the method's own files).
EXPORTS = (PEFT_CONFIG, PEFT_WEIGHTS, CARD, EXPERIMENT)
#: Experiment settings that say where a run wrote, not what it was.
PLACE = ("output_dir", "overwrite", "run_dir", "adapter", "progress")


def write_exports(method: Method, model: nn.Module, directory: Path, meta: dict[str, Any]) -> None:
    if method.name == "lora":
        write_peft_adapter(method, model, directory)
    experiment = meta.get("experiment")
    if isinstance(experiment, dict):
        runnable = {k: v for k, v in experiment.items() if k not in PLACE}
        (directory / EXPERIMENT).write_text(yaml.safe_dump(runnable, sort_keys=False))
    (directory / CARD).write_text(model_card(meta, peft=method.name == "lora"))


def write_peft_adapter(method: Method, model: nn.Module, directory: Path) -> None:
    """peft's on-disk LoRA: the adapted modules' A/B under `base_model.model.<module>.lora_{A,B}.weight` and a
    LoraConfig naming exactly those modules. Read off peft's own layers while the method is attached (attached
    here for the moment if it is not), so the file holds what peft computed with."""
    from peft import LoraConfig
    from peft.tuners.lora import LoraLayer

    def adapted() -> dict[str, LoraLayer]:
        return {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer)}

    attached_here = not adapted()
    if attached_here:
        method.attach(model)
    try:
        layers = adapted()
        tensors = {}
        for name, layer in layers.items():
            for matrix in ("lora_A", "lora_B"):
                weight = getattr(layer, matrix)["default"].weight
                tensors[f"base_model.model.{name}.{matrix}.weight"] = weight.detach().contiguous().cpu()
    finally:
        if attached_here:
            method.detach()
    config = method.config
    peft_config = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=sorted(layers),
        base_model_name_or_path=str(getattr(model.config, "_name_or_path", "") or "") or None,
    )
    peft_config.save_pretrained(str(directory))
    save_file(tensors, str(directory / PEFT_WEIGHTS), metadata={"format": "pt"})


def model_card(meta: dict[str, Any], peft: bool = False) -> str:
    """A short README.md in the Hugging Face card layout (YAML front matter, then text)."""
    base = meta.get("base_model", {})
    base_name = base.get("name_or_path") or "?"
    experiment = meta.get("experiment") or {}
    data = experiment.get("data") or {}
    task = meta.get("task") or data.get("task") or "?"
    front = {
        "base_model": base_name,
        "library_name": "peft" if peft else "hificl",
        "tags": ["hificl", meta.get("method", "?"), task],
    }
    metrics = meta.get("metrics") or {}
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        f"# {meta.get('method', '?')} on {task}",
        "",
        f"- Base model: `{base_name}` ({base.get('architecture', '?')}, weights digest "
        f"`{base.get('weights_digest', '?')}`; loading checks it)",
        f"- Method: {meta.get('method', '?')} (preset `{meta.get('preset', '?')}`), "
        f"{meta.get('num_trainable', '?')} trained parameters; settings in `method.json`",
        f"- Task: {task}; trained on {meta.get('train_size', '?')} examples, seed {experiment.get('seed', '?')}",
        f"- Metrics on {meta.get('eval_size', '?')} evaluation examples: "
        + (", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())) or "not recorded"),
        f"- Made by hificl {meta.get('hificl_version', '?')}: "
        + ("`hificl train --config experiment.yaml`" if experiment else "`hificl train`"),
        "",
        "## Load",
        "",
        "    hificl evaluate --adapter <this directory>" + (" --config experiment.yaml" if experiment else ""),
    ]
    if peft:
        lines += [
            "",
            "or with peft alone:",
            "",
            "    from peft import PeftModel",
            '    model = PeftModel.from_pretrained(base_model, "<this directory>")',
        ]
    return "\n".join(lines) + "\n"
