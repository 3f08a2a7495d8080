"""The picture of the synthetic benchmark in the README: a few images with their questions, answers and captions."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from hificl.data.synthetic import generate_split


def write_benchmark_figure(path: str | Path, n_images: int = 6, seed: int = 0, columns: int = 3) -> Path:
    """Render `n_images` train images of the benchmark (seed `seed`) with every question and one caption."""
    split = generate_split("train", n_images, seed)
    rows = -(-n_images // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 4.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:n_images]):
        ax.imshow(split.images[i], interpolation="nearest")
        lines = [f"{q.question} -> {q.answer} [{q.family}]" for q in split.vqa if q.image_index == i]
        lines += [f"{q.question} -> {q.answer}" for q in split.okvqa if q.image_index == i]
        lines.append(f'"{split.captions[i][0]}"')
        text = "\n".join(textwrap.fill(line, 46) for line in lines)
        ax.text(0, -0.04, text, transform=ax.transAxes, va="top", fontsize=7, family="monospace")
    fig.suptitle("syn-VQA (ambiguous questions, fixed binding), syn-OKVQA, syn-Caption: 32x32 images", fontsize=10)
    fig.tight_layout(h_pad=9)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(write_benchmark_figure(Path(__file__).resolve().parents[1] / "docs" / "benchmark.png"))
