"""Choosing in-context demonstrations: seeded, never the query itself; random or by image similarity."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from hificl.data.images import open_image
from hificl.data.records import CaptionRecord, VQARecord
from hificl.errors import ConfigError

Record = VQARecord | CaptionRecord
SELECTIONS = ("random", "similar")


class DemonstrationSampler:
    """k demonstrations per query from a pool; the same (seed, query) always gets the same demonstrations.

    A demonstration never shows the query's image (so never the query itself, nor another question on it).

    "similar" ranks the pool by cosine similarity of 16x16 grey thumbnails of the images (a cheap, model-free
    stand-in for retrieval by image embedding), then samples among the closest 4k to keep some diversity.
    """

    def __init__(self, pool: Sequence[Record], seed: int, selection: str = "random") -> None:
        if selection not in SELECTIONS:
            raise ConfigError(f"Unknown demonstration selection {selection!r}; use one of {SELECTIONS}.")
        if not pool:
            raise ConfigError("The demonstration pool is empty.")
        self.pool, self.seed, self.selection = list(pool), seed, selection
        self._thumbs: np.ndarray | None = None

    def _thumbnails(self) -> np.ndarray:
        if self._thumbs is None:
            self._thumbs = np.stack([_thumbnail(r) for r in self.pool])
        return self._thumbs

    def sample(self, query: Record, k: int) -> list[Record]:
        if k <= 0:
            return []
        rng = random.Random(f"{self.seed}:{getattr(query, 'question_id', -1)}:{query.image_id}")
        if self.selection == "random":  # a few spare draws cover a query image that recurs in the pool
            order = rng.sample(range(len(self.pool)), min(len(self.pool), k + 16))
        else:
            scores = self._thumbnails() @ _thumbnail(query)
            order = np.argsort(-scores, kind="stable")[: 4 * k + 16].tolist()
            rng.shuffle(order)
        chosen = [self.pool[i] for i in order if self.pool[i].image_id != query.image_id][:k]
        if len(chosen) < k:
            raise ConfigError(f"The demonstration pool has fewer than {k} records other than the query.")
        return chosen


def _thumbnail(record: Record) -> np.ndarray:
    image = open_image(record.image_path).convert("L").resize((16, 16))
    x = np.asarray(image, dtype=np.float32).ravel()
    x = x - x.mean()
    return x / (np.linalg.norm(x) + 1e-6)
