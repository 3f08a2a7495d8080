"""The tiny LMM: a smaller copy pretrained in seconds really does ICL, and its directory loads like a download."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from hificl.data.prompts import Example, build_prompt, cut_at_stop_words
from hificl.data.synthetic import generate_split
from hificl.data.synthetic_scenes import COLOURS, SHAPES
from hificl.tiny.model import TinyConfig, pixel_values
from hificl.tiny.pretrain import INFO_FILE, PretrainConfig, pretrain, weights_sha256

SMALL = PretrainConfig(
    model=TinyConfig(hidden=64, layers=2, intermediate=256, vision_hidden=64, vision_layers=1, max_positions=256),
    steps=300,
    batch_size=16,
    lr=3e-3,
    max_shots=2,
    pool_size=1000,
    vision_warmup=0.1,
)
FAMILY_WORDS = {"colour": set(COLOURS), "shape": set(SHAPES), "count": {"1", "2", "3", "4"}}


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pretrain(tmp_path_factory.mktemp("tiny") / "model", seed=0, config=SMALL)


def test_saved_dir_loads_like_a_downloaded_model(small_model: Path) -> None:
    model = AutoModelForImageTextToText.from_pretrained(small_model)
    processor = AutoProcessor.from_pretrained(small_model)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert model.config.text_config.num_key_value_heads < model.config.text_config.num_attention_heads
    assert model.config._attn_implementation == "sdpa"
    split = generate_split("val", 2, 0)
    prompt = build_prompt("vqa", Example("what is it?"), [Example("what is it?", "red")])
    inputs = processor(images=list(split.images), text=[prompt], return_tensors="pt")
    assert (inputs["input_ids"] == model.config.image_token_index).sum() == 2 * 4
    assert processor.tokenizer.unk_token_id not in inputs["input_ids"]
    # The pretraining fast path feeds exactly the pixels the saved image processor produces.
    assert np.allclose(inputs["pixel_values"].numpy(), pixel_values(split.images).numpy(), atol=1e-6)
    assert json.loads((small_model / INFO_FILE).read_text())["key"]["seed"] == 0


def test_pretraining_is_cached(small_model: Path) -> None:
    stamp = (small_model / "model.safetensors").stat().st_mtime_ns
    assert pretrain(small_model, seed=0, config=SMALL) == small_model
    assert (small_model / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="other than this pretraining run"):
        pretrain(small_model, seed=1, config=SMALL)


def test_a_run_is_its_seed_and_config_whatever_the_load(tmp_path: Path) -> None:
    """The same recipe twice, once with both cores kept busy by other processes and a budget long exceeded:
    byte-identical weights, all steps done, the machine's thread count restored."""
    config = replace(SMALL, steps=20)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    busy: list[subprocess.Popen] = []
    try:
        quiet = pretrain(tmp_path / "quiet", seed=3, config=config)
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
        with pytest.warns(UserWarning, match="budget"):
            loaded = pretrain(tmp_path / "loaded", seed=3, config=config, budget_minutes=0.0)
        assert torch.get_num_threads() == 1
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
        torch.set_num_threads(before)
    assert weights_sha256(quiet) == weights_sha256(loaded)
    info = json.loads((loaded / INFO_FILE).read_text())
    assert info["steps_done"] == 20 and info["threads"] == 2 and info["weights_sha256"] == weights_sha256(quiet)
    assert info["torch"] == torch.__version__ and info["cpu_capability"]
    other = pretrain(tmp_path / "other", seed=4, config=config)
    assert weights_sha256(other) != weights_sha256(quiet)


def _family_mass(model_dir: Path, shots: int) -> float:
    """Mean probability the first answer token puts on the query family's answer words (e.g. any colour)."""
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    vocab = processor.tokenizer.get_vocab()
    train, val = generate_split("train", 200, 0), generate_split("val", 40, 0)
    rng = np.random.default_rng(0)
    masses = []
    for q in val.vqa:
        same = [d for d in train.vqa if d.question == q.question]
        demos = [same[i] for i in rng.choice(len(same), size=shots, replace=False)]
        prompt = build_prompt("vqa", Example(q.question), [Example(d.question, d.answer) for d in demos])
        images = [train.images[d.image_index] for d in demos] + [val.images[q.image_index]]
        inputs = processor(images=images, text=[prompt], return_tensors="pt")
        with torch.no_grad():
            probs = model(**inputs).logits[0, -1].softmax(-1)
        masses.append(float(probs[[vocab[w] for w in FAMILY_WORDS[q.family]]].sum()))
    return float(np.mean(masses))


def test_demonstrations_reveal_what_an_ambiguous_question_asks(small_model: Path) -> None:
    """Zero-shot the model cannot know which family "what is it?" asks for; two demonstrations tell it."""
    zero, two = _family_mass(small_model, 0), _family_mass(small_model, 2)
    assert zero < 0.45  # about 1/3: the family prior; measured 0.31
    assert two > zero + 0.1  # measured 0.51 after 300 steps


def test_generation_is_cut_at_the_next_prompt_field() -> None:
    assert cut_at_stop_words("red Question : what", "vqa") == "red"
    assert cut_at_stop_words("a red circle Image : x", "caption") == "a red circle"
