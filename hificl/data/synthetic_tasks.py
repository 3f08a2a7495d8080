"""Questions, answers and captions of the synthetic benchmark, derived from a scene.

syn-VQA asks only AMBIGUOUS surface questions: "what is it?" could mean the large object's colour, its shape or
the number of objects. The benchmark fixes one binding (`SYN_VQA_BINDING`), so a task-level method can learn
it; pretraining draws a fresh binding per episode, so the frozen model can only read it off demonstrations.
"""

from __future__ import annotations

import numpy as np

from hificl.data.synthetic_scenes import COLOURS, POSITIONS, SHAPES, Scene

VQA_FAMILIES: tuple[str, ...] = ("colour", "shape", "count")
AMBIGUOUS_QUESTIONS: tuple[str, ...] = ("what is it?", "what do you see?", "what is in the image?")
SYN_VQA_BINDING: dict[str, str] = dict(zip(AMBIGUOUS_QUESTIONS, VQA_FAMILIES, strict=True))

# Unambiguous perception questions: pretraining only (the vision warm-up), never in the exported benchmark.
EXPLICIT_QUESTIONS: dict[str, str] = {
    "colour": "what colour is the large object?",
    "shape": "what shape is the large object?",
    "count": "how many objects are there?",
    "position": "where is the large object?",
}
SHAPE_COUNT_QUESTION = "how many {shape}s are there?"

# syn-OKVQA: facts about colours and shapes that no pixel shows; the model learns them in pretraining.
COLOUR_KNOWLEDGE = {"red": "fire", "green": "grass", "blue": "sky", "yellow": "sun", "purple": "grapes"}
SHAPE_KNOWLEDGE = {"circle": "wheel", "square": "window", "triangle": "pyramid", "cross": "hospital"}
CORNERS = {"circle": "0", "square": "4", "triangle": "3", "cross": "12"}
OKVQA_QUESTIONS: dict[str, str] = {
    "colour-knowledge": "what does the colour of the large object remind you of?",
    "shape-knowledge": "which thing has the shape of the large object?",
    "corners": "how many corners does the large object have?",
}
OKVQA_FAMILIES: tuple[str, ...] = tuple(OKVQA_QUESTIONS)

NUMBER_WORDS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "12": "twelve"}
SYNONYMS: dict[str, tuple[str, ...]] = {
    **{c: (f"dark {c}", f"light {c}") for c in COLOURS},
    **{d: (w,) for d, w in NUMBER_WORDS.items()},
    "circle": ("round", "ring"),
    "square": ("box",),
    "triangle": ("triangular",),
    "cross": ("plus",),
    "fire": ("flames",),
    "grass": ("leaves",),
    "sky": ("ocean", "water"),
    "sun": ("banana",),
    "grapes": ("plum",),
    "wheel": ("ball", "coin"),
    "window": ("box",),
    "pyramid": ("roof",),
    "hospital": ("church",),
}
ANSWER_TYPES = {"count": "number", "corners": "number"}


def answer(scene: Scene, family: str) -> str:
    """The canonical answer of a question family (syn-VQA, syn-OKVQA or an explicit one) about `scene`."""
    main = scene.main
    if family == "colour":
        return main.colour
    if family == "shape":
        return main.shape
    if family == "count":
        return str(len(scene.objects))
    if family == "position":
        return main.position
    if family == "colour-knowledge":
        return COLOUR_KNOWLEDGE[main.colour]
    if family == "shape-knowledge":
        return SHAPE_KNOWLEDGE[main.shape]
    if family == "corners":
        return CORNERS[main.shape]
    if family in SHAPES:
        return str(sum(o.shape == family for o in scene.objects))
    raise ValueError(f"Unknown question family {family!r}.")


def ten_answers(canonical: str, rng: np.random.Generator) -> tuple[str, ...]:
    """Ten annotator answers like VQAv2's: 8-10 give the canonical answer, the rest a synonym."""
    n_other = int(rng.choice([0, 1, 2], p=[0.5, 0.3, 0.2])) if canonical in SYNONYMS else 0
    others = [str(rng.choice(SYNONYMS[canonical])) for _ in range(n_other)]
    answers = [canonical] * (10 - n_other) + others
    return tuple(answers[i] for i in rng.permutation(10))


_SIZE_WORDS: tuple[dict[str, str], ...] = ({}, {"large": "big", "small": "small"}, {"large": "large", "small": "small"})
_CAPTION_STYLES = (("", 0), ("", 2), ("an image of ", 0), ("there is ", 1), ("a picture with ", 2))


def _phrase(size: str, colour: str, shape: str, style: int) -> str:
    word = _SIZE_WORDS[style].get(size)
    return f"a {word} {colour} {shape}" if word else f"a {colour} {shape}"


def _join(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else " , ".join(phrases[:-1]) + " and " + phrases[-1]


def captions(scene: Scene, rng: np.random.Generator) -> tuple[str, ...]:
    """Five reference captions listing every object; the first is the canonical one pretraining teaches."""
    objs = list(scene.objects)
    out = []
    for i, (prefix, style) in enumerate(_CAPTION_STYLES):
        order = objs if i == 0 else [objs[j] for j in rng.permutation(len(objs))]
        out.append(prefix + _join([_phrase(o.size, o.colour, o.shape, style) for o in order]))
    return tuple(out)


def vocabulary() -> set[str]:
    """Every word the questions, answers and captions of the benchmark use (before punctuation splitting)."""
    words: set[str] = set()
    texts = [
        *AMBIGUOUS_QUESTIONS,
        *EXPLICIT_QUESTIONS.values(),
        *OKVQA_QUESTIONS.values(),
        *(SHAPE_COUNT_QUESTION.format(shape=s) for s in SHAPES),
        *POSITIONS,
        *COLOUR_KNOWLEDGE.values(),
        *SHAPE_KNOWLEDGE.values(),
        *NUMBER_WORDS,
        *NUMBER_WORDS.values(),
        *(w for syn in SYNONYMS.values() for w in syn),
        "an image of there is a picture with and , big small large",
        *COLOURS,
        *SHAPES,
    ]
    for text in texts:
        words.update(text.replace("?", " ? ").split())
    return words
