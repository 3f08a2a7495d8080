"""Offline stand-ins for the NLTK/pattern text tools the reference scripts call (no corpus download at run time).

- ``word_tokenize`` approximates ``nltk.word_tokenize`` (Treebank rules): words, numbers with inner
  commas/periods and hyphenated words stay whole; "n't" and "'s"/"'re"/"'ve"/"'ll"/"'d"/"'m" are split off
  ("don't" -> "do", "n't"); every other punctuation mark is its own token. Unlike NLTK, a word with an inner
  apostrophe that is not a clitic ("o'clock") is split in three, and sentences are not split first.
- ``singularize`` uses ``inflect``'s ``singular_noun`` instead of pattern's ``singularize`` (CHAIR) or the Rails
  ``inflection.singularize`` (OK-VQA). inflect strips an "s" from non-nouns ("is" -> "i", "bus" -> "bu"), so
  words ending in "ss", "us", "is", "as" or "ous" and a short list of function words are left alone.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_TOKEN = re.compile(
    r"\d+(?:[.,]\d+)+"  # 1,000  3.5
    r"|[^\W_]+(?:-[^\W_]+)*(?=n't\b)"  # "do" of "don't"
    r"|n't\b"
    r"|'(?:s|re|ve|ll|d|m)\b"
    r"|[^\W_]+(?:-[^\W_]+)*"  # words, hyphenated words
    r"|[^\w\s]|_",
    re.IGNORECASE,
)
_KEEP_ENDINGS = ("ss", "us", "is", "as", "ous")
_KEEP_WORDS = frozenset(
    {"yes", "its", "his", "hers", "ours", "yours", "theirs", "always", "sometimes", "perhaps", "does", "goes"}
)


@lru_cache(maxsize=1)
def _engine() -> Any:
    """inflect's engine, imported on first use: importing inflect costs about 2 s."""
    import inflect

    return inflect.engine()


def word_tokenize(text: str) -> list[str]:
    """Treebank-like tokens of `text` (see the module docstring for where it differs from NLTK)."""
    return _TOKEN.findall(text)


@lru_cache(maxsize=65536)
def singularize(word: str) -> str:
    """Singular form of a plural noun, the word itself otherwise (inflect, with guards against its over-reach)."""
    if not word.isalpha() or len(word) < 3 or word in _KEEP_WORDS or word.endswith(_KEEP_ENDINGS):
        return word
    single = _engine().singular_noun(word)
    return single if isinstance(single, str) and single else word
