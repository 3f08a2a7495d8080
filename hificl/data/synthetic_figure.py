"""A picture of the synthetic benchmark for the docs: images with their syn-VQA, syn-OKVQA items and a caption."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from hificl.data.synthetic import generate_split


def plot_benchmark(path: Path, n: int = 6, seed: int = 0) -> Path:
    """Save a grid of `n` validation images, each with its questions, answers and first reference caption."""
    split = generate_split("val", n, seed)
    cols = 3
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 5.6 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        ax.imshow(split.images[i], interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        lines = [f"{q.question} -> {q.answer}  [{q.family}]" for q in split.vqa[3 * i : 3 * i + 3]]
        lines += [
            f"{q.question.replace('the large object', 'it')} -> {q.answer}" for q in split.okvqa[3 * i : 3 * i + 3]
        ]
        caption = split.captions[i][0].replace(" , ", ", ")
        lines.append(f'"{caption}"')
        text = "\n".join(_wrap(line, 48) for line in lines)
        ax.text(0, -0.03, text, transform=ax.transAxes, va="top", ha="left", fontsize=7)
    fig.suptitle("syn-VQA, syn-OKVQA (ambiguous questions, fixed bindings), syn-Caption (one convention)", fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.93, bottom=0.18, hspace=0.75, wspace=0.08)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])
