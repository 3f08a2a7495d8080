"""Pretraining episodes: interleaved image-text prompts built with `build_prompt`, exactly as methods see them.

A VQA episode draws a fresh binding of the ambiguous surface questions to the families (colour, shape, count),
an OK-VQA episode one of the ambiguous knowledge questions to the relations (colour-knowledge, shape-knowledge,
corners), a caption episode a captioning convention: only its demonstrations tell what the episode wants, which
is what makes the model do ICL. Explicit perception questions and captions teach the vision tower; explicit
knowledge questions teach the facts no pixel shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerFast

from hificl.data.prompts import IMAGE_PLACEHOLDER, Example, build_prompt, example_text
from hificl.data.synthetic_scenes import COLOURS, MAX_OBJECTS, SHAPES, Scene, render, sample_scene
from hificl.data.synthetic_tasks import (
    AMBIGUOUS_QUESTIONS,
    CONVENTIONS,
    EXPLICIT_QUESTIONS,
    OKVQA_AMBIGUOUS_QUESTIONS,
    OKVQA_EXPLICIT_QUESTIONS,
    OKVQA_FAMILIES,
    SHAPE_COUNT_QUESTION,
    VQA_FAMILIES,
    answer,
    caption,
)
from hificl.tiny.model import pixel_values


@dataclass(frozen=True)
class Episode:
    """One prompt: kind, examples (the last is the query), their scenes and images (N, 32, 32, 3)."""

    kind: str
    examples: tuple[Example, ...]
    scenes: tuple[Scene, ...]
    images: np.ndarray


@dataclass(frozen=True)
class Mix:
    """Sampling weights of one curriculum stage; `batch_scale` multiplies the batch of short 0-shot stages."""

    max_shots: int
    explicit: float
    vqa: float = 0.5
    okvqa: float = 0.3
    batch_scale: int = 1
    max_asked: int = len(AMBIGUOUS_QUESTIONS)


def curriculum(progress: float, max_shots: int = 8, warmup: float = 0.3, copy_phase: float = 0.0) -> Mix:
    """A vision warm-up (0-shot perception questions and captions, 4x batch, as cheap as one 8-shot batch), then
    up to `max_shots` shots with mostly ambiguous questions whose binding only the demonstrations reveal.

    For the first `copy_phase` of the run after the warm-up, a VQA episode asks ONE ambiguous question: copying
    the demonstrations' answer family is then enough, and that circuit forms first; matching the query to its
    own demonstrations among mixed ones comes after, on top of it."""
    if progress < warmup:
        return Mix(max_shots=0, explicit=0.8, vqa=0.5, okvqa=0.25, batch_scale=4)
    asked = 1 if progress < warmup + copy_phase else len(AMBIGUOUS_QUESTIONS)
    return Mix(max_shots=max_shots, explicit=0.05, vqa=0.5, okvqa=0.32, max_asked=asked)


def draw_shots(rng: np.random.Generator, mix: Mix, p: float = 0.2) -> int:
    """Geometric with success probability `p` (0.2: mean ~4 after capping at `max_shots`, 1 in 5 episodes at the
    cap; 0 in the warm-up). Short episodes are cheap and start ICL; enough long ones teach the model to pick its
    question's demonstrations among many (p = 0.3 left the count family at 0.41 with 8 shots; uniform 1-8 shots
    did not develop ICL within 10 minutes)."""
    return 0 if mix.max_shots == 0 else min(int(rng.geometric(p)), mix.max_shots)


class ScenePool:
    """A fixed pool of rendered scenes drawn once from the seed: rendering per step would cost more than it adds."""

    def __init__(self, rng: np.random.Generator, size: int) -> None:
        self.scenes = [sample_scene(rng) for _ in range(size)]
        self.images = np.stack([render(s) for s in self.scenes])

    def draw(self, rng: np.random.Generator, n: int) -> tuple[list[Scene], np.ndarray]:
        idx = rng.integers(0, len(self.scenes), size=n)
        return [self.scenes[i] for i in idx], self.images[idx]


def _explicit_vqa(scene: Scene, rng: np.random.Generator) -> Example:
    family = str(rng.choice([*EXPLICIT_QUESTIONS, *SHAPES]))
    text = EXPLICIT_QUESTIONS.get(family) or SHAPE_COUNT_QUESTION.format(shape=family)
    return Example(text, answer(scene, family))


def _explicit_okvqa(scene: Scene, rng: np.random.Generator) -> Example:
    family = str(rng.choice(OKVQA_FAMILIES))
    return Example(OKVQA_EXPLICIT_QUESTIONS[family], answer(scene, family))


def _ambiguous_examples(scenes: list[Scene], rng: np.random.Generator, mix: Mix, okvqa: bool) -> tuple[Example, ...]:
    """Examples asking 1 to `mix.max_asked` ambiguous questions under a fresh binding, a few explicit ones mixed in.

    With one question asked, copying the demonstrations' answer family suffices (the easy signal that starts
    ICL); with more, the query must be matched to the demonstrations that ask its own question."""
    questions, families = (OKVQA_AMBIGUOUS_QUESTIONS, OKVQA_FAMILIES) if okvqa else (AMBIGUOUS_QUESTIONS, VQA_FAMILIES)
    explicit = _explicit_okvqa if okvqa else _explicit_vqa
    binding = dict(zip(questions, rng.permutation(families), strict=True))
    asked = [str(q) for q in rng.permutation(questions)[: int(rng.integers(1, mix.max_asked + 1))]]
    examples = []
    for scene in scenes:
        if rng.random() < mix.explicit:
            examples.append(explicit(scene, rng))
        else:
            text = str(rng.choice(asked))
            examples.append(Example(text, answer(scene, str(binding[text]))))
    return tuple(examples)


def sample_episode(pool: ScenePool, rng: np.random.Generator, shots: int, mix: Mix) -> Episode:
    """One episode of `shots` demonstrations and a query, of a kind drawn from the mix."""
    scenes, images = pool.draw(rng, shots + 1)
    u = rng.random()
    if u < mix.vqa + mix.okvqa:
        return Episode("vqa", _ambiguous_examples(scenes, rng, mix, okvqa=u >= mix.vqa), tuple(scenes), images)
    convention = CONVENTIONS[int(rng.integers(len(CONVENTIONS)))]
    examples = tuple(Example("", caption(s, convention)) for s in scenes)
    return Episode("caption", examples, tuple(scenes), images)


CELL_CLASSES = (len(SHAPES) + 1, len(COLOURS) + 1, 3)


def cell_labels(scenes: list[Scene]) -> torch.Tensor:
    """(N, 4, 3) per-cell targets (shape, colour, size; 0 = empty) for the auxiliary perception loss.

    Cell i is vision patch i: both are in row-major order over the 2x2 grid.
    """
    labels = torch.zeros(len(scenes), MAX_OBJECTS, 3, dtype=torch.long)
    colours = list(COLOURS)
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            size = 1 if obj.size == "large" else 2
            labels[i, obj.cell] = torch.tensor([SHAPES.index(obj.shape) + 1, colours.index(obj.colour) + 1, size])
    return labels


def episode_text(episode: Episode, image_tokens: int) -> tuple[str, list[tuple[int, int]]]:
    """The training text (prompt + " " + answer; eos added by the caller) and the character spans of every
    target (demonstrations' and the query's), with each `<image>` expanded as the processor expands it."""
    *demos, query = episode.examples
    prompt = build_prompt(episode.kind, query, demos)
    text = f"{prompt} {query.target}"
    spans, start = [], 0
    for example in episode.examples:
        part = example_text(episode.kind, example)
        start = text.index(part, start) + len(part)
        spans.append((start - len(example.target or ""), start))
    expanded = text.replace(IMAGE_PLACEHOLDER, IMAGE_PLACEHOLDER * image_tokens)
    shift = len(IMAGE_PLACEHOLDER) * (image_tokens - 1)
    out = []
    for a, b in spans:
        n_before = text[:a].count(IMAGE_PLACEHOLDER)
        out.append((a + n_before * shift, b + n_before * shift))
    return expanded, out


def collate(
    episodes: list[Episode], tokenizer: PreTrainedTokenizerFast, image_tokens: int, query_only: bool = False
) -> dict[str, torch.Tensor]:
    """Right-padded input ids, attention mask, pixel values and labels (-100 except target tokens and eos)."""
    texts, spans = zip(*(episode_text(e, image_tokens) for e in episodes), strict=True)
    enc = tokenizer(list(texts), return_offsets_mapping=True, add_special_tokens=False)
    length = max(len(ids) for ids in enc["input_ids"]) + 1
    ids = torch.full((len(texts), length), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    mask = torch.zeros_like(ids)
    for i, (row, offsets) in enumerate(zip(enc["input_ids"], enc["offset_mapping"], strict=True)):
        n = len(row)
        ids[i, :n] = torch.tensor(row)
        ids[i, n] = tokenizer.eos_token_id
        mask[i, : n + 1] = 1
        labels[i, n] = tokenizer.eos_token_id
        wanted = spans[i][-1:] if query_only else spans[i]
        for j, (a, b) in enumerate(offsets):
            if any(a >= lo and b <= hi for lo, hi in wanted):
                labels[i, j] = row[j]
    images = np.concatenate([e.images for e in episodes])
    cells = cell_labels([s for e in episodes for s in e.scenes])
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": pixel_values(images),
        "labels": labels,
        "cell_labels": cells,
    }
