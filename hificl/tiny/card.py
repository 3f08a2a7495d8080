"""The model card: zero-shot vs k-shot ICL of a saved tiny LMM on held-out synthetic images, and whether the
embedded default meets its targets as an instrument (ICL gains, headroom, hallucinations).

It loads the model through AutoModelForImageTextToText / AutoProcessor, prompts with `build_prompt` and scores
with the package's metrics (official VQA accuracy, OK-VQA accuracy with stemming, CIDEr, CHAIR), so the numbers
are what any downstream method sees as its zero-shot and ICL baselines.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from hificl.data.prompts import MAX_NEW_TOKENS, Example, build_prompt, cut_at_stop_words
from hificl.data.synthetic import SynQuestion, SyntheticSplit, generate_split
from hificl.data.synthetic_scenes import SHAPES
from hificl.metrics.chair import ChairScorer
from hificl.metrics.cider import cider_score
from hificl.metrics.okvqa import okvqa_accuracy, stem_answer
from hificl.metrics.vqa import vqa_accuracy

SHOTS: tuple[int, ...] = (0, 1, 2, 4, 8)
#: Issue 14's targets for the embedded default. `best` is the best cell of the card (ICL at some shot count);
#: the trained methods' cells, which the "<= 0.95" target is also about, are checked by `make ablations`.
TARGETS: dict[str, float] = {"qa_gain": 0.15, "cider_gain": 0.3, "zero_over_best": 0.7, "qa_ceiling": 0.95}


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


def _qa_scores(
    gen: Generator, queries: Sequence[SynQuestion], val: SyntheticSplit,
    pool: Sequence[SynQuestion], train: SyntheticSplit, shots: int, rng: np.random.Generator, okvqa: bool,
) -> list[float]:  # fmt: skip
    demos = _demo_indices(rng, len(pool), len(queries), shots)
    prompts, images = [], []
    for q, row in zip(queries, demos, strict=True):
        ds = [pool[j] for j in row]
        prompts.append(build_prompt("vqa", Example(q.question), [Example(d.question, d.answer) for d in ds]))
        images.append([train.images[d.image_index] for d in ds] + [val.images[q.image_index]])
    predictions = gen("vqa", prompts, images)
    if okvqa:
        pairs = zip(predictions, queries, strict=True)
        return [okvqa_accuracy(p, [stem_answer(a) for a in q.answers]) for p, q in pairs]
    return [vqa_accuracy(p, q.answers) for p, q in zip(predictions, queries, strict=True)]


def _caption_scores(
    gen: Generator, idx: np.ndarray, val: SyntheticSplit, train: SyntheticSplit, shots: int, rng: np.random.Generator
) -> dict[str, Any]:
    demos = _demo_indices(rng, len(train.scenes), len(idx), shots)
    prompts, images = [], []
    for i, row in zip(idx, demos, strict=True):
        prompts.append(build_prompt("caption", Example(""), [Example("", train.captions[j][0]) for j in row]))
        images.append([train.images[j] for j in row] + [val.images[i]])
    predictions = gen("caption", prompts, images)
    references = [list(val.captions[i]) for i in idx]
    chair = ChairScorer(vocabulary={s: [s] for s in SHAPES})
    scored = [
        chair.score(p, [o.shape for o in val.scenes[i].objects], val.captions[i])
        for p, i in zip(predictions, idx, strict=True)
    ]
    mentions = sum(len(s["mentions"]) for s in scored)
    return {
        "cider": round(cider_score(predictions, references)[0], 3),
        "chair_s": round(float(np.mean([s["chair_s"] for s in scored])), 3),
        "chair_i": round(sum(len(s["hallucinated"]) for s in scored) / max(mentions, 1), 3),
        "example": predictions[0],
    }


def evaluate(model_dir: Path, n_per_family: int = 100, shots: Sequence[int] = SHOTS, seed: int = 0) -> dict[str, Any]:
    """Scores per task and family for each number of shots; demonstrations are random train-split items.

    syn-VQA: official VQA accuracy; syn-OKVQA: the same after OK-VQA's stemming; syn-Caption: corpus CIDEr over
    the benchmark's five references, CHAIRs and CHAIRi over the shape categories.
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
            scores = {
                f: _qa_scores(gen, qs, val, pool, train, k, rng, okvqa=task == "syn-okvqa")
                for f, qs in per_family.items()
            }
            for f, c in scores.items():
                table[f][str(k)] = round(float(np.mean(c)), 3)
            table["all"][str(k)] = round(float(np.mean([x for c in scores.values() for x in c])), 3)
        results[task] = table
    idx = np.arange(min(n_per_family, len(val.scenes)))
    by_shots = {str(k): _caption_scores(gen, idx, val, train, k, rng) for k in shots}
    results["syn-caption"] = {m: {k: v[m] for k, v in by_shots.items()} for m in ("cider", "chair_s", "chair_i")}
    results["syn-caption-examples"] = {k: v["example"] for k, v in by_shots.items()}
    return results


def _check(value: float, target: float, at_least: bool) -> dict[str, Any]:
    ok = value >= target if at_least else value <= target
    return {"value": round(value, 3), "target": f"{'>=' if at_least else '<='} {target:g}", "pass": bool(ok)}


def check_targets(results: dict[str, Any]) -> dict[str, Any]:
    """Each target of the embedded default, per task and per question family, with its value and pass/fail.

    A task "shows ICL" when its task-level row passes every target; `emerged` is all three tasks showing it.
    """
    checks: dict[str, Any] = {}
    for task in ("syn-vqa", "syn-okvqa"):
        for family, row in results[task].items():
            most = str(max(int(k) for k in row))
            best = max(row.values())
            checks[f"{task}/{family}"] = {
                f"{most}-shot minus 0-shot": _check(row[most] - row["0"], TARGETS["qa_gain"], True),
                "0-shot / best": _check(row["0"] / best if best else 1.0, TARGETS["zero_over_best"], False),
                "best": _check(best, TARGETS["qa_ceiling"], False),
            }
    cap = results["syn-caption"]
    most = str(max(int(k) for k in cap["cider"]))
    best = max(cap["cider"].values())
    checks["syn-caption/all"] = {
        f"{most}-shot minus 0-shot CIDEr": _check(cap["cider"][most] - cap["cider"]["0"], TARGETS["cider_gain"], True),
        "0-shot / best CIDEr": _check(cap["cider"]["0"] / best if best else 1.0, TARGETS["zero_over_best"], False),
        "0-shot CHAIRs > 0": {"value": cap["chair_s"]["0"], "target": "> 0", "pass": cap["chair_s"]["0"] > 0},
        f"{most}-shot CHAIRs > 0": {"value": cap["chair_s"][most], "target": "> 0", "pass": cap["chair_s"][most] > 0},
    }
    for row in checks.values():
        row["pass"] = all(c["pass"] for c in row.values() if isinstance(c, dict))
    tasks = ("syn-vqa/all", "syn-okvqa/all", "syn-caption/all")
    return {
        "checks": checks,
        "emerged": all(checks[t]["pass"] for t in tasks),
        "all_pass": all(row["pass"] for row in checks.values()),
    }
