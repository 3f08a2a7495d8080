"""The model card: zero-shot vs k-shot ICL accuracy of a saved tiny LMM on held-out synthetic images.

It loads the model through AutoModelForImageTextToText / AutoProcessor and prompts with `build_prompt`, so the
numbers are what any downstream method sees as its zero-shot and ICL baselines.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from hificl.data.prompts import MAX_NEW_TOKENS, Example, build_prompt, cut_at_stop_words
from hificl.data.synthetic import SynQuestion, SyntheticSplit, generate_split
from hificl.data.synthetic_scenes import COLOURS, SHAPES, Scene

SHOTS: tuple[int, ...] = (0, 1, 2, 4, 8)
_PAIR = re.compile(rf"\b({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})\b")


def caption_objects(caption: str) -> Counter[tuple[str, str]]:
    """The (colour, shape) pairs a caption names."""
    return Counter(_PAIR.findall(caption))


def scene_objects(scene: Scene) -> Counter[tuple[str, str]]:
    return Counter((o.colour, o.shape) for o in scene.objects)


class Generator:
    """Greedy, batched generation with a saved model directory, as an evaluator would run it."""

    def __init__(self, model_dir: Path, batch_size: int = 64) -> None:
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
        self.batch_size = batch_size

    @torch.inference_mode()
    def __call__(self, kind: str, prompts: Sequence[str], images: Sequence[Sequence[np.ndarray]]) -> list[str]:
        tokenizer = self.processor.tokenizer
        out: list[str] = []
        for i in range(0, len(prompts), self.batch_size):
            batch_images = [Image.fromarray(im) for ims in images[i : i + self.batch_size] for im in ims]
            inputs = self.processor(
                images=batch_images, text=list(prompts[i : i + self.batch_size]), return_tensors="pt", padding=True
            )
            generated = self.model.generate(
                **inputs,
                max_new_tokens=MAX_NEW_TOKENS[kind],
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
            new = generated[:, inputs["input_ids"].shape[1] :]
            out += [cut_at_stop_words(t, kind) for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
        return out


def _demo_indices(rng: np.random.Generator, pool_size: int, n: int, shots: int) -> np.ndarray:
    return np.stack([rng.choice(pool_size, size=shots, replace=False) for _ in range(n)]).reshape(n, shots)


def _qa_accuracy(
    gen: Generator, queries: Sequence[SynQuestion], val: SyntheticSplit,
    pool: Sequence[SynQuestion], train: SyntheticSplit, shots: int, rng: np.random.Generator,
) -> list[bool]:  # fmt: skip
    demos = _demo_indices(rng, len(pool), len(queries), shots)
    prompts, images = [], []
    for q, row in zip(queries, demos, strict=True):
        ds = [pool[j] for j in row]
        prompts.append(build_prompt("vqa", Example(q.question), [Example(d.question, d.answer) for d in ds]))
        images.append([train.images[d.image_index] for d in ds] + [val.images[q.image_index]])
    predictions = gen("vqa", prompts, images)
    return [p == q.answer for p, q in zip(predictions, queries, strict=True)]


def _caption_accuracy(
    gen: Generator, idx: np.ndarray, val: SyntheticSplit, train: SyntheticSplit, shots: int, rng: np.random.Generator
) -> list[bool]:
    demos = _demo_indices(rng, len(train.scenes), len(idx), shots)
    prompts, images = [], []
    for i, row in zip(idx, demos, strict=True):
        prompts.append(build_prompt("caption", Example(""), [Example("", train.captions[j][0]) for j in row]))
        images.append([train.images[j] for j in row] + [val.images[i]])
    predictions = gen("caption", prompts, images)
    return [caption_objects(p) == scene_objects(val.scenes[i]) for p, i in zip(predictions, idx, strict=True)]


def evaluate(model_dir: Path, n_per_family: int = 100, shots: Sequence[int] = SHOTS, seed: int = 0) -> dict[str, Any]:
    """Accuracy per task and family for each number of shots; demonstrations are random train-split items.

    syn-VQA / syn-OKVQA: exact match with the canonical answer after cutting at the stop words. syn-Caption:
    the caption names exactly the image's (colour, shape) objects, no more, no fewer.
    """
    gen = Generator(model_dir)
    train = generate_split("train", 2000, seed)
    val = generate_split("val", max(n_per_family, 100), seed)
    rng = np.random.default_rng([seed, 11])
    results: dict[str, Any] = {}
    for task, items, pool in (("syn-vqa", val.vqa, train.vqa), ("syn-okvqa", val.okvqa, train.okvqa)):
        families = sorted({q.family for q in items})
        per_family = {f: [q for q in items if q.family == f][:n_per_family] for f in families}
        table: dict[str, dict[str, float]] = {"all": {}, **{f: {} for f in families}}
        for k in shots:
            correct = {f: _qa_accuracy(gen, qs, val, pool, train, k, rng) for f, qs in per_family.items()}
            for f, c in correct.items():
                table[f][str(k)] = round(float(np.mean(c)), 3)
            table["all"][str(k)] = round(float(np.mean([x for c in correct.values() for x in c])), 3)
        results[task] = table
    idx = np.arange(min(n_per_family, len(val.scenes)))
    results["syn-caption"] = {
        "all": {str(k): round(float(np.mean(_caption_accuracy(gen, idx, val, train, k, rng))), 3) for k in shots}
    }
    return results
