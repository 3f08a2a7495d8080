"""OK-VQA accuracy: the official VQA evaluation after the OK-VQA v1.1 answer stemming of the ICL literature.

The stemming follows open_flamingo's eval/ok_vqa_utils.py (``postprocess_ok_vqa_generation``): cut the
generation at the first "Question", "Answer" or "Short", tokenize, and per token apply its manual table, else
lemmatise "-ing" words as verbs (WordNet), else singularise plural nouns (POS tag NNS/NNPS, then the Rails
``inflection.singularize``); tokens are re-joined with spaces. OK-VQA v1.1's ``answers`` field was stemmed the
same way, which is why predictions must be.

Deliberate differences (no NLTK corpus can be downloaded at run time):

- Tokens come from ``hificl.metrics.text.word_tokenize`` (an NLTK Treebank look-alike). As in the original,
  "men's" becomes "men 's", so the table's possessive entries ("men's", "boy's") can never fire.
- No POS tagger: a token counts as a plural noun when ``text.singularize`` (inflect) changes it, so a
  third-person verb ("runs") is singularised too, where the tagger would have said VBZ.
- No WordNet: "-ing" words go through a small rule set (undouble "running" -> "run", add "e" after
  "c"/"v"/"z" or after a one-syllable consonant-vowel-consonant stem "making" -> "make", else drop "ing").
  WordNet returns the SHORTEST verb it knows ("hoping" -> "hop"); the rules cannot know which verbs exist.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from hificl.metrics.text import singularize, word_tokenize
from hificl.metrics.vqa import VQAAccuracy, vqa_accuracy

# open_flamingo's _MANUAL_MATCHES, verbatim: word -> what OK-VQA's stemming expects.
MANUAL_MATCHES: dict[str, str] = {
    "police": "police",
    "las": "las",
    "vegas": "vegas",
    "yes": "yes",
    "jeans": "jean",
    "hell's": "hell",
    "domino's": "domino",
    "morning": "morn",
    "clothes": "cloth",
    "are": "are",
    "riding": "ride",
    "leaves": "leaf",
    "dangerous": "danger",
    "clothing": "cloth",
    "texting": "text",
    "kiting": "kite",
    "firefighters": "firefight",
    "ties": "tie",
    "married": "married",
    "teething": "teeth",
    "gloves": "glove",
    "tennis": "tennis",
    "dining": "dine",
    "directions": "direct",
    "waves": "wave",
    "christmas": "christmas",
    "drives": "drive",
    "pudding": "pud",
    "coding": "code",
    "plating": "plate",
    "quantas": "quanta",
    "hornes": "horn",
    "graves": "grave",
    "mating": "mate",
    "paned": "pane",
    "alertness": "alert",
    "sunbathing": "sunbath",
    "tenning": "ten",
    "wetness": "wet",
    "urinating": "urine",
    "sickness": "sick",
    "braves": "brave",
    "firefighting": "firefight",
    "lenses": "lens",
    "reflections": "reflect",
    "backpackers": "backpack",
    "eatting": "eat",
    "designers": "design",
    "curiousity": "curious",
    "playfulness": "play",
    "blindness": "blind",
    "hawke": "hawk",
    "tomatoe": "tomato",
    "rodeoing": "rodeo",
    "brightness": "bright",
    "circuses": "circus",
    "skateboarders": "skateboard",
    "staring": "stare",
    "electronics": "electron",
    "electicity": "elect",
    "mountainous": "mountain",
    "socializing": "social",
    "hamburgers": "hamburg",
    "caves": "cave",
    "transitions": "transit",
    "wading": "wade",
    "creame": "cream",
    "toileting": "toilet",
    "sautee": "saute",
    "buildings": "build",
    "belongings": "belong",
    "stockings": "stock",
    "walle": "wall",
    "cumulis": "cumuli",
    "travelers": "travel",
    "conducter": "conduct",
    "browsing": "brows",
    "pooping": "poop",
    "haircutting": "haircut",
    "toppings": "top",
    "hearding": "heard",
    "sunblocker": "sunblock",
    "bases": "base",
    "markings": "mark",
    "mopeds": "mope",
    "kindergartener": "kindergarten",
    "pies": "pie",
    "scrapbooking": "scrapbook",
    "couponing": "coupon",
    "meetings": "meet",
    "elevators": "elev",
    "lowes": "low",
    "men's": "men",
    "childrens": "children",
    "shelves": "shelve",
    "paintings": "paint",
    "raines": "rain",
    "paring": "pare",
    "expressions": "express",
    "routes": "rout",
    "pease": "peas",
    "vastness": "vast",
    "awning": "awn",
    "boy's": "boy",
    "drunkenness": "drunken",
    "teasing": "teas",
    "conferences": "confer",
    "ripeness": "ripe",
    "suspenders": "suspend",
    "earnings": "earn",
    "reporters": "report",
    "kid's": "kid",
    "containers": "contain",
    "corgie": "corgi",
    "porche": "porch",
    "microwaves": "microwave",
    "batter's": "batter",
    "sadness": "sad",
    "apartments": "apart",
    "oxygenize": "oxygen",
    "striping": "stripe",
    "purring": "pure",
    "professionals": "profession",
    "piping": "pipe",
    "farmer's": "farmer",
    "potatoe": "potato",
    "emirates": "emir",
    "womens": "women",
    "veteran's": "veteran",
    "wilderness": "wilder",
    "propellers": "propel",
    "alpes": "alp",
    "charioteering": "chariot",
    "swining": "swine",
    "illness": "ill",
    "crepte": "crept",
    "adhesives": "adhesive",
    "regent's": "regent",
    "decorations": "decor",
    "rabbies": "rabbi",
    "overseas": "oversea",
    "travellers": "travel",
    "casings": "case",
    "smugness": "smug",
    "doves": "dove",
    "nationals": "nation",
    "mustange": "mustang",
    "ringe": "ring",
    "gondoliere": "gondolier",
    "vacationing": "vacate",
    "reminders": "remind",
    "baldness": "bald",
    "settings": "set",
    "glaced": "glace",
    "coniferous": "conifer",
    "revelations": "revel",
    "personals": "person",
    "daughter's": "daughter",
    "badness": "bad",
    "projections": "project",
    "polarizing": "polar",
    "vandalizers": "vandal",
    "minerals": "miner",
    "protesters": "protest",
    "controllers": "control",
    "weddings": "wed",
    "sometimes": "sometime",
    "earing": "ear",
}
_CUT = re.compile("Question|Answer|Short")
_VOWELS = "aeiouy"
_ING_KEEP = frozenset({"nothing", "something", "anything", "everything", "during"})


def _vowel_groups(word: str) -> int:
    return len(re.findall(f"[{_VOWELS}]+", word))


def lemmatize_ing(word: str) -> str:
    """Verb lemma of an "-ing" word by rule (offline stand-in for WordNet's lemmatize(word, VERB))."""
    stem = word[:-3]
    if word.lower() in _ING_KEEP or len(stem) < 2 or _vowel_groups(stem.lower()) == 0:
        return word
    low = stem.lower()
    if len(low) >= 3 and low[-1] == low[-2] and low[-1] not in _VOWELS + "lsfz":
        return stem[:-1]
    if low[-1] in "cvz":
        return stem + "e"
    cvc = len(low) >= 3 and low[-3] not in _VOWELS and low[-2] in "aeiou" and low[-1] not in _VOWELS + "wx"
    if cvc and _vowel_groups(low) == 1:
        return stem + "e"
    return stem


def stem_answer(text: str) -> str:
    """OK-VQA stemming of one answer (open_flamingo's OKVQAStemmer.stem, offline)."""
    out = []
    for word in word_tokenize(text):
        if word in MANUAL_MATCHES:
            word = MANUAL_MATCHES[word]
        elif word.endswith("ing"):
            word = lemmatize_ing(word)
        else:
            word = singularize(word)
        out.append(word)
    return " ".join(out)


def postprocess_okvqa(generation: str) -> str:
    """open_flamingo's postprocess_ok_vqa_generation: cut at the first prompt marker, then stem."""
    return stem_answer(_CUT.split(generation, maxsplit=1)[0])


def okvqa_accuracy(prediction: str, answers: Sequence[str], stem: bool = True) -> float:
    """Official VQA accuracy of the (stemmed) prediction against OK-VQA's 10 answers."""
    return vqa_accuracy(postprocess_okvqa(prediction) if stem else prediction, answers)


class OKVQAAccuracy(VQAAccuracy):
    """Mean OK-VQA accuracy; ``stem=False`` scores raw predictions (for generations already post-processed)."""

    def __init__(self, stem: bool = True, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.stem = stem

    def score(self, prediction: str, answers: Sequence[str]) -> float:
        """One question's accuracy after the OK-VQA post-processing."""
        return okvqa_accuracy(prediction, answers, stem=self.stem)
