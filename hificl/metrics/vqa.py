r"""VQA accuracy, a faithful port of the official VQAv2 evaluation (PythonEvaluationTools/vqaEvaluation/vqaEval.py).

Papers compare VQA numbers across codebases, so every quirk of the official script is kept on purpose:

- The prediction goes through ``process_punctuation`` then ``process_digit_article``; the ground-truth answers go
  through ``process_punctuation`` only, and only when the answers are not all identical. So a prediction "two"
  becomes "2" and never matches ten identical ground-truth answers "two"; "dog" never matches ten "a dog".
- ``process_punctuation`` deletes a punctuation mark when it touches a space or when the text holds a
  digit-comma-digit anywhere ("1,000" -> "1000"), and otherwise replaces it by a space ("red/white" ->
  "red white"). "!" and "-" are not in its list and survive.
- The period regex ``(?!<=\d)(\.)(?!\d)`` was meant as a look-behind but is a look-ahead: every period not
  followed by a digit goes ("3.5" keeps its period). The script passes ``re.UNICODE`` (32) positionally as
  ``count``, so at most 32 periods are removed.
- Most values of the contraction table use the typographic apostrophe (U+2019): "dont" becomes "don’t",
  while a typed "don't" loses its apostrophe to the punctuation step and becomes "don t".
- Accuracy is the mean over the leave-one-out subsets (drop one of the N answers, by position) of
  ``min(1, matches / 3)``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

CONTRACTIONS: dict[str, str] = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn’t’ve",
    "couldnt’ve": "couldn’t’ve",
    "didnt": "didn’t",
    "doesnt": "doesn’t",
    "dont": "don’t",
    "hadnt": "hadn’t",
    "hadnt’ve": "hadn’t’ve",
    "hadn'tve": "hadn’t’ve",
    "hasnt": "hasn’t",
    "havent": "haven’t",
    "hed": "he’d",
    "hed’ve": "he’d’ve",
    "he’dve": "he’d’ve",
    "hes": "he’s",
    "howd": "how’d",
    "howll": "how’ll",
    "hows": "how’s",
    "Id’ve": "I’d’ve",
    "I’dve": "I’d’ve",
    "Im": "I’m",
    "Ive": "I’ve",
    "isnt": "isn’t",
    "itd": "it’d",
    "itd’ve": "it’d’ve",
    "it’dve": "it’d’ve",
    "itll": "it’ll",
    "let’s": "let’s",
    "maam": "ma’am",
    "mightnt": "mightn’t",
    "mightnt’ve": "mightn’t’ve",
    "mightn’tve": "mightn’t’ve",
    "mightve": "might’ve",
    "mustnt": "mustn’t",
    "mustve": "must’ve",
    "neednt": "needn’t",
    "notve": "not’ve",
    "oclock": "o’clock",
    "oughtnt": "oughtn’t",
    "ow’s’at": "’ow’s’at",
    "’ows’at": "’ow’s’at",
    "’ow’sat": "’ow’s’at",
    "shant": "shan’t",
    "shed’ve": "she’d’ve",
    "she’dve": "she’d’ve",
    "she’s": "she’s",
    "shouldve": "should’ve",
    "shouldnt": "shouldn’t",
    "shouldnt’ve": "shouldn’t’ve",
    "shouldn’tve": "shouldn’t’ve",
    "somebody’d": "somebodyd",
    "somebodyd’ve": "somebody’d’ve",
    "somebody’dve": "somebody’d’ve",
    "somebodyll": "somebody’ll",
    "somebodys": "somebody’s",
    "someoned": "someone’d",
    "someoned’ve": "someone’d’ve",
    "someone’dve": "someone’d’ve",
    "someonell": "someone’ll",
    "someones": "someone’s",
    "somethingd": "something’d",
    "somethingd’ve": "something’d’ve",
    "something’dve": "something’d’ve",
    "somethingll": "something’ll",
    "thats": "that’s",
    "thered": "there’d",
    "thered’ve": "there’d’ve",
    "there’dve": "there’d’ve",
    "therere": "there’re",
    "theres": "there’s",
    "theyd": "they’d",
    "theyd’ve": "they’d’ve",
    "they’dve": "they’d’ve",
    "theyll": "they’ll",
    "theyre": "they’re",
    "theyve": "they’ve",
    "twas": "’twas",
    "wasnt": "wasn’t",
    "wed’ve": "we’d’ve",
    "we’dve": "we’d’ve",
    "weve": "we've",
    "werent": "weren’t",
    "whatll": "what’ll",
    "whatre": "what’re",
    "whats": "what’s",
    "whatve": "what’ve",
    "whens": "when’s",
    "whered": "where’d",
    "wheres": "where's",
    "whereve": "where’ve",
    "whod": "who’d",
    "whod’ve": "who’d’ve",
    "who’dve": "who’d’ve",
    "wholl": "who’ll",
    "whos": "who’s",
    "whove": "who've",
    "whyll": "why’ll",
    "whyre": "why’re",
    "whys": "why’s",
    "wont": "won’t",
    "wouldve": "would’ve",
    "wouldnt": "wouldn’t",
    "wouldnt’ve": "wouldn’t’ve",
    "wouldn’tve": "wouldn’t’ve",
    "yall": "y’all",
    "yall’ll": "y’all’ll",
    "y’allll": "y’all’ll",
    "yall’d’ve": "y’all’d’ve",
    "y’alld’ve": "y’all’d’ve",
    "y’all’dve": "y’all’d’ve",
    "youd": "you’d",
    "youd’ve": "you’d’ve",
    "you’dve": "you’d’ve",
    "youll": "you’ll",
    "youre": "you’re",
    "youve": "you’ve",
}
MANUAL_MAP: dict[str, str] = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES: tuple[str, ...] = ("a", "an", "the")
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
PUNCT: tuple[str, ...] = (
    ";",
    ":",
    "/",
    "'",
    "[",
    "]",
    '"',
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
)
# The official script calls PERIOD_STRIP.sub("", text, re.UNICODE): the flag lands in `count`.
_PERIOD_COUNT = int(re.UNICODE)


def process_punctuation(text: str) -> str:
    """The official processPunctuation: the space/comma test reads the ORIGINAL text, not the text being edited."""
    out = text
    has_number_comma = COMMA_STRIP.search(text) is not None
    for p in PUNCT:
        touches_space = p + " " in text or " " + p in text
        out = out.replace(p, "" if touches_space or has_number_comma else " ")
    return PERIOD_STRIP.sub("", out, count=_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """The official processDigitArticle: lowercase, number words to digits, drop articles, expand contractions."""
    words = [MANUAL_MAP.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_prediction(prediction: str) -> str:
    """What the official script compares: the prediction after both normalisation steps."""
    return process_digit_article(process_punctuation(_clean(prediction)))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Official VQA accuracy of one prediction against its human answers (normally 10), in [0, 1]."""
    if len(answers) == 0:
        raise ValueError("VQA accuracy needs at least one ground-truth answer; got an empty answer list.")
    pred = normalize_prediction(prediction)
    # The script strips only the prediction; ground-truth answers are compared as stored (after punctuation).
    gts = list(answers)
    if len(set(gts)) > 1:
        gts = [process_punctuation(a) for a in gts]
    hits = [g == pred for g in gts]
    total_hits = sum(hits)
    # Leave-one-out by position: the script compares answer dicts, which differ by answer_id.
    per_subset = [min(1.0, (total_hits - hit) / 3) for hit in hits]
    return sum(per_subset) / len(per_subset)


class VQAAccuracy(Metric):
    """Mean official VQA accuracy over questions.

    Per-question scores are computed in update(), so under DDP only two numbers are summed across ranks.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    score_sum: Tensor
    total: Tensor

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("score_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def score(self, prediction: str, answers: Sequence[str]) -> float:
        """The per-question score this metric averages (overridden by OK-VQA)."""
        return vqa_accuracy(prediction, answers)

    def update(self, predictions: list[str], answers: list[list[str]]) -> None:
        """Add one batch: predictions[i] is scored against answers[i]."""
        if len(predictions) != len(answers):
            raise ValueError(
                f"VQA accuracy got {len(predictions)} predictions but {len(answers)} answer lists; they must pair up."
            )
        batch = sum(self.score(p, a) for p, a in zip(predictions, answers, strict=True))
        self.score_sum += batch
        self.total += len(predictions)

    def compute(self) -> Tensor:
        """Mean accuracy in [0, 1] (the official script reports 100x this, rounded to 2 decimals)."""
        if self.total == 0:
            return torch.tensor(0.0, dtype=torch.float64)
        return self.score_sum / self.total
