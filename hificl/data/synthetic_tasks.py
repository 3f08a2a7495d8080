"""Questions, answers and captions of the synthetic benchmark, derived from a scene.

Each task has something only its demonstrations reveal, as real ICL tasks do (the answer style of VQAv2, the
kind of knowledge OK-VQA wants, COCO's captioning conventions):

- syn-VQA asks AMBIGUOUS surface questions: "what is it?" could mean the large object's colour, its shape or the
  number of objects;
- syn-OKVQA asks ambiguous knowledge questions: "what does it remind you of?" could mean what has the large
  object's colour (fire), what has its shape (wheel) or how many corners it has; the facts themselves come from
  pretraining (its explicit questions, `OKVQA_EXPLICIT_QUESTIONS`), never from a pixel;
- syn-Caption follows one captioning convention (`BENCHMARK_CONVENTION`) out of `CONVENTIONS`: which objects to
  mention, the opening words, whether to name sizes.

The benchmark fixes each binding and the convention, so a task-level method can learn them; pretraining draws
them afresh per episode, so the frozen model can only read them off demonstrations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hificl.data.synthetic_scenes import COLOURS, POSITIONS, SHAPES, Scene, SceneObject

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
COLOUR_KNOWLEDGE = {
    "red": "fire", "green": "grass", "blue": "sky", "yellow": "sun", "purple": "grapes", "orange": "pumpkin",
}  # fmt: skip
SHAPE_KNOWLEDGE = {
    "circle": "wheel", "square": "window", "triangle": "pyramid", "cross": "hospital", "octagon": "stop sign",
}  # fmt: skip
CORNERS = {"circle": "0", "square": "4", "triangle": "3", "cross": "12", "octagon": "8"}
# Explicit knowledge questions: pretraining only (where the facts are learned), never in the exported benchmark.
OKVQA_EXPLICIT_QUESTIONS: dict[str, str] = {
    "colour-knowledge": "what does the colour of the large object remind you of?",
    "shape-knowledge": "which thing has the shape of the large object?",
    "corners": "how many corners does the large object have?",
}
OKVQA_FAMILIES: tuple[str, ...] = tuple(OKVQA_EXPLICIT_QUESTIONS)
OKVQA_AMBIGUOUS_QUESTIONS: tuple[str, ...] = (
    "what does it remind you of?",
    "what is it like?",
    "what do you know about it?",
)
# The benchmark's syn-OKVQA questions, family -> surface question (one fixed binding, as SYN_VQA_BINDING).
OKVQA_QUESTIONS: dict[str, str] = dict(zip(OKVQA_FAMILIES, OKVQA_AMBIGUOUS_QUESTIONS, strict=True))

NUMBER_WORDS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "8": "eight", "12": "twelve"}
SYNONYMS: dict[str, tuple[str, ...]] = {
    **{c: (f"dark {c}", f"light {c}") for c in COLOURS},
    **{d: (w,) for d, w in NUMBER_WORDS.items()},
    "circle": ("round", "ring"),
    "square": ("box",),
    "triangle": ("triangular",),
    "cross": ("plus",),
    "octagon": ("octagonal",),
    "fire": ("flames",),
    "grass": ("leaves",),
    "sky": ("ocean", "water"),
    "sun": ("banana",),
    "grapes": ("plum",),
    "pumpkin": ("carrot",),
    "wheel": ("ball", "coin"),
    "window": ("box",),
    "pyramid": ("roof",),
    "hospital": ("church",),
    "stop sign": ("sign",),
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


@dataclass(frozen=True)
class CaptionConvention:
    """How a captioner words a scene: opening words, size words (none, "big"/"small" or "large"/"small") and
    which objects it mentions (all, large one first then the rest in grid order; or only the large one)."""

    prefix: str = ""
    sizes: str = "none"
    mention: str = "all"

    def phrase(self, obj: SceneObject) -> str:
        words = " ".join(w for w in (_SIZE_WORDS[self.sizes].get(obj.size), obj.colour, obj.shape) if w)
        return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"


_SIZE_WORDS: dict[str, dict[str, str]] = {
    "none": {},
    "big": {"large": "big", "small": "small"},
    "large": {"large": "large", "small": "small"},
}


CAPTION_PREFIXES: tuple[str, ...] = ("", "an image of ", "there is ", "a picture with ")
CONVENTIONS: tuple[CaptionConvention, ...] = tuple(
    CaptionConvention(prefix, sizes, mention)
    for prefix in CAPTION_PREFIXES
    for sizes in ("none", "big", "large")
    for mention in ("all", "large")
)
#: syn-Caption's convention: every object, sizes named. Short enough for the caption generation budget (20
#: tokens with four objects) and not the one a model that has not seen the task prefers (see the card).
BENCHMARK_CONVENTION = CaptionConvention(prefix="", sizes="large", mention="all")


def _join(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else " , ".join(phrases[:-1]) + " and " + phrases[-1]


def caption(scene: Scene, convention: CaptionConvention, order: list[int] | None = None) -> str:
    """One caption of `scene` in `convention`; `order` permutes the small objects (default: grid order)."""
    objs = list(scene.objects) if convention.mention == "all" else [scene.main]
    small = objs[1:] if order is None else [objs[1:][j] for j in order]
    return convention.prefix + _join([convention.phrase(o) for o in [objs[0], *small]])


def captions(scene: Scene, rng: np.random.Generator) -> tuple[str, ...]:
    """Five references in the benchmark's convention, like five annotators following one guideline: the first
    lists the small objects in grid order (the canonical caption), the others in random orders."""
    n_small = len(scene.objects) - 1
    orders = [None] + [list(rng.permutation(n_small)) for _ in range(4)]
    return tuple(caption(scene, BENCHMARK_CONVENTION, order) for order in orders)


def vocabulary() -> set[str]:
    """Every word the questions, answers and captions of the benchmark use (before punctuation splitting)."""
    words: set[str] = set()
    texts = [
        *AMBIGUOUS_QUESTIONS,
        *EXPLICIT_QUESTIONS.values(),
        *OKVQA_EXPLICIT_QUESTIONS.values(),
        *OKVQA_AMBIGUOUS_QUESTIONS,
        *(SHAPE_COUNT_QUESTION.format(shape=s) for s in SHAPES),
        *POSITIONS,
        *COLOUR_KNOWLEDGE.values(),
        *SHAPE_KNOWLEDGE.values(),
        *NUMBER_WORDS,
        *NUMBER_WORDS.values(),
        *(w for syn in SYNONYMS.values() for w in syn),
        *CAPTION_PREFIXES,
        "and , big small large",
        *COLOURS,
        *SHAPES,
    ]
    for text in texts:
        words.update(text.replace("?", " ? ").split())
    return words
