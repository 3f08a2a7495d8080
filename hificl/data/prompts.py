"""Prompt templates of the MimIC paper, shared by training, evaluation, ICL and the tiny model's pretraining.

One module so that the instruction, the demonstrations and the query are laid out identically everywhere: the
public code trains without the instruction and evaluates with it, which this package must not copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

IMAGE_PLACEHOLDER = "<image>"

INSTRUCTIONS: dict[str, str] = {
    "vqa": "Instruction: provide an answer to the question. Use the image to answer.",
    "caption": "",
}

STOP_WORDS: dict[str, tuple[str, ...]] = {
    "vqa": ("Question", "Answer", "Image"),
    "caption": ("Caption", "Image"),
}

#: The papers' evaluation protocol (MimIC's eval config, inherited by the HiFICL code): new tokens per kind and
#: the decoding; "greedy" stays available by name. docs/protocol.md gives the source of each value.
MAX_NEW_TOKENS: dict[str, int] = {"vqa": 10, "caption": 20}
DECODINGS: dict[str, dict[str, float | int]] = {
    "beam3": {"num_beams": 3, "length_penalty": 0.0},
    "greedy": {"num_beams": 1},
}


@dataclass(frozen=True)
class Example:
    """One demonstration or query: `text` is the question (VQA) or empty (caption); `target` the answer/caption."""

    text: str
    target: str | None = None


def example_text(kind: str, example: Example, image_token: str = IMAGE_PLACEHOLDER) -> str:
    """`Image: {image} Question: {q} Answer: {a}` or `Image: {image} Caption: {c}`; the target is left open if None."""
    target = "" if example.target is None else f" {example.target}"
    if kind == "vqa":
        return f"Image: {image_token} Question: {example.text} Answer:{target}"
    if kind == "caption":
        return f"Image: {image_token} Caption:{target}"
    raise ValueError(f"Unknown prompt kind {kind!r}: expected 'vqa' or 'caption'.")


def build_prompt(
    kind: str,
    query: Example,
    demonstrations: Sequence[Example] = (),
    *,
    instruction: bool = True,
    image_token: str = IMAGE_PLACEHOLDER,
    separator: str = "\n",
) -> str:
    """Instruction, then each demonstration with its target, then the query with its target left open.

    The returned prompt ends right after `Answer:` / `Caption:`; the target (with a leading space) follows it in
    training, and generation continues from it at evaluation. It holds one `image_token` per example, in order:
    demonstrations' images first, the query's image last.
    """
    parts = [INSTRUCTIONS[kind]] if instruction and INSTRUCTIONS.get(kind) else []
    parts += [example_text(kind, d, image_token) for d in demonstrations]
    parts.append(example_text(kind, Example(query.text, None), image_token))
    return separator.join(parts)


def cut_at_stop_words(text: str, kind: str) -> str:
    """A generation up to the first stop word or line break of its kind (the papers' post-processing)."""
    words = text.replace("\n", " \n ").split(" ")
    kept: list[str] = []
    for word in words:
        if word == "\n" or word.rstrip(":") in STOP_WORDS[kind]:
            break
        kept.append(word)
    return " ".join(kept).strip()
