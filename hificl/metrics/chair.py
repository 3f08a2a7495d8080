"""CHAIR object hallucination (Rohrbach et al. 2018), a port of LisaAnne/Hallucination utils/chair.py.

Per caption, as the script does: lower-case, tokenize, singularise every word, merge the double words
("hot dog", "baby elephant" -> elephant, "passenger train" -> train, "toilet seat" -> toilet), drop "seat"
when "toilet" is also there, keep the words of the vocabulary and map each to its category. A mention is
hallucinated when its category is not among the image's ground-truth objects (instance categories plus the
objects named in its ground-truth captions). CHAIRi = hallucinated mentions / mentions (repeats count each
time); CHAIRs = captions with a hallucinated mention / captions; recall = ground-truth objects mentioned /
ground-truth objects, summed over captions (the recall later CHAIR scripts added).

Differences from the script: tokens come from ``text.word_tokenize`` instead of NLTK, and words are
singularised with inflect instead of pattern, except that a word that already is a vocabulary entry is kept as
it is (inflect would turn "bus" into "bu"). A custom vocabulary (e.g. the synthetic benchmark's shapes) gets
its two-word entries as double words and no COCO-specific rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from hificl.metrics.coco_objects import coco_double_word_map, parse_synonyms
from hificl.metrics.text import singularize, word_tokenize

if TYPE_CHECKING:
    from hificl.data.records import CaptionRecord


class ChairScorer:
    """Finds vocabulary objects in captions and scores one caption against its image's ground truth."""

    def __init__(
        self,
        vocabulary: Mapping[str, Sequence[str]] | None = None,
        double_words: Mapping[str, str] | None = None,
    ) -> None:
        if vocabulary is None:
            synonyms = parse_synonyms()
            doubles = coco_double_word_map()
            self.toilet_seat_rule = True
        else:
            synonyms = {cat: [cat, *syns] for cat, syns in vocabulary.items()}
            doubles = {s: s for names in synonyms.values() for s in names if len(s.split()) == 2}
            self.toilet_seat_rule = False
        if not synonyms:
            raise ValueError("CHAIR needs a vocabulary with at least one category.")
        doubles.update(double_words or {})
        self.categories: list[str] = list(synonyms)
        self.double_words = doubles
        # Later lines win, as in the script's inverse_synonym_dict.
        self.inverse: dict[str, str] = {s: cat for cat, names in synonyms.items() for s in names}

    def caption_mentions(self, text: str) -> list[tuple[str, str]]:
        """(word as found, category) for every object mention, in order."""
        words = [w if w in self.inverse else singularize(w) for w in word_tokenize(text.lower())]
        merged: list[str] = []
        i = 0
        while i < len(words):
            pair = " ".join(words[i : i + 2])
            if pair in self.double_words:
                merged.append(self.double_words[pair])
                i += 2
            else:
                merged.append(words[i])
                i += 1
        if self.toilet_seat_rule and "toilet" in merged and "seat" in merged:
            merged = [w for w in merged if w != "seat"]
        return [(w, self.inverse[w]) for w in merged if w in self.inverse]

    def caption_objects(self, text: str) -> list[str]:
        """Categories of every object mention, in order (repeats kept)."""
        return [cat for _, cat in self.caption_mentions(text)]

    def ground_truth(self, gt_objects: Iterable[str], gt_captions: Iterable[str] = ()) -> set[str]:
        """An image's ground-truth categories: its annotated objects plus those its reference captions name."""
        truth: set[str] = set()
        for name in gt_objects:
            if name not in self.inverse:
                raise ValueError(f"CHAIR ground-truth object {name!r} is not in the vocabulary.")
            truth.add(self.inverse[name])
        for caption in gt_captions:
            truth.update(self.caption_objects(caption))
        return truth

    def score(self, caption: str, gt_objects: Iterable[str], gt_captions: Iterable[str] = ()) -> dict[str, Any]:
        """One caption's mentions, hallucinations and per-caption CHAIRs / CHAIRi / recall."""
        truth = self.ground_truth(gt_objects, gt_captions)
        mentions = self.caption_mentions(caption)
        hallucinated = [(w, cat) for w, cat in mentions if cat not in truth]
        recalled = {cat for _, cat in mentions if cat in truth}
        return {
            "mentions": [cat for _, cat in mentions],
            "hallucinated": [cat for _, cat in hallucinated],
            "hallucinated_words": hallucinated,
            "gt_objects": sorted(truth),
            "recalled": sorted(recalled),
            "chair_s": int(bool(hallucinated)),
            "chair_i": len(hallucinated) / len(mentions) if mentions else 0.0,
            "recall": len(recalled) / len(truth) if truth else 0.0,
        }


class CHAIR(Metric):
    """Corpus CHAIRs, CHAIRi and recall over captions.

    Each caption is kept as three count vectors over the categories (mentions, hallucinated mentions,
    ground truth), flattened into list states concatenated across ranks, so DDP sync is exact and the
    per-caption records (which objects were hallucinated) survive the sync.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    mention_counts: list[Tensor]
    hallucination_counts: list[Tensor]
    gt_flags: list[Tensor]

    def __init__(
        self,
        vocabulary: Mapping[str, Sequence[str]] | None = None,
        double_words: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.vocabulary = {k: list(v) for k, v in vocabulary.items()} if vocabulary is not None else None
        self.scorer = ChairScorer(vocabulary, double_words)
        self._index = {cat: i for i, cat in enumerate(self.scorer.categories)}
        for name in ("mention_counts", "hallucination_counts", "gt_flags"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        captions: Sequence[str],
        gt_objects: Sequence[Iterable[str]],
        gt_captions: Sequence[Sequence[str]] | None = None,
    ) -> None:
        """Add generated captions with, per caption, the image's annotated objects and reference captions."""
        refs = gt_captions if gt_captions is not None else [()] * len(captions)
        if not len(captions) == len(gt_objects) == len(refs):
            raise ValueError(
                f"CHAIR got {len(captions)} captions, {len(gt_objects)} object sets and {len(refs)} "
                "reference lists; they must pair up."
            )
        size = len(self.scorer.categories)
        mentions = torch.zeros(len(captions), size, dtype=torch.long)
        hallucinated = torch.zeros_like(mentions)
        truth = torch.zeros_like(mentions)
        for row, (caption, objects, references) in enumerate(zip(captions, gt_objects, refs, strict=True)):
            record = self.scorer.score(caption, objects, references)
            for cat in record["mentions"]:
                mentions[row, self._index[cat]] += 1
            for cat in record["hallucinated"]:
                hallucinated[row, self._index[cat]] += 1
            for cat in record["gt_objects"]:
                truth[row, self._index[cat]] = 1
        self.mention_counts.append(mentions.flatten().to(self.device))
        self.hallucination_counts.append(hallucinated.flatten().to(self.device))
        self.gt_flags.append(truth.flatten().to(self.device))

    def update_records(self, captions: Sequence[str], records: Sequence[CaptionRecord]) -> None:
        """update() from CaptionRecords: ground truth = record.objects + objects named in record.captions."""
        self.update(captions, [r.objects for r in records], [r.captions for r in records])

    def _matrices(self) -> tuple[Tensor, Tensor, Tensor]:
        size = len(self.scorer.categories)

        def as_matrix(state: list[Tensor] | Tensor) -> Tensor:
            if isinstance(state, list) and not state:
                return torch.zeros(0, size, dtype=torch.long)
            return dim_zero_cat(state).long().reshape(-1, size)

        return (
            as_matrix(self.mention_counts),
            as_matrix(self.hallucination_counts),
            as_matrix(self.gt_flags),
        )

    def compute(self) -> dict[str, Tensor]:
        """{"chair_s", "chair_i", "recall"} as fractions in [0, 1]; 0 where a denominator is 0."""
        mentions, hallucinated, truth = self._matrices()

        def ratio(num: Tensor, den: Tensor) -> Tensor:
            return num.double() / den.double() if den > 0 else torch.tensor(0.0, dtype=torch.float64)

        recalled = ((mentions > 0) & (truth > 0)).sum()
        return {
            "chair_s": ratio((hallucinated.sum(dim=1) > 0).sum(), torch.tensor(mentions.shape[0])),
            "chair_i": ratio(hallucinated.sum(), mentions.sum()),
            "recall": ratio(recalled, truth.sum()),
        }

    def caption_records(self) -> list[dict[str, dict[str, int]]]:
        """Per caption (all ranks, rank order): {"hallucinated": {category: count}, "mentioned": {...}}."""
        with self.sync_context(should_sync=True, should_unsync=True):
            mentions, hallucinated, _ = self._matrices()
        cats = self.scorer.categories

        def as_dict(row: Tensor) -> dict[str, int]:
            return {cats[i]: int(row[i]) for i in row.nonzero().flatten().tolist()}

        return [
            {"hallucinated": as_dict(h), "mentioned": as_dict(m)} for m, h in zip(mentions, hallucinated, strict=True)
        ]

    def most_hallucinated(self, k: int = 10) -> list[tuple[str, int]]:
        """The k categories with the most hallucinated mentions (all ranks), most frequent first."""
        with self.sync_context(should_sync=True, should_unsync=True):
            _, hallucinated, _ = self._matrices()
        totals = hallucinated.sum(dim=0).tolist()
        ranked = sorted(
            ((cat, n) for cat, n in zip(self.scorer.categories, totals, strict=True) if n > 0),
            key=lambda item: (-item[1], item[0]),
        )
        return ranked[:k]
