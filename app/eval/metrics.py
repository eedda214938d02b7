"""Answer scoring as the shared README says (the Speculative RAG and Self-RAG papers' rules).

* short and multi-hop QA: correct when a normalised gold alias is contained in the normalised answer
  (lower case, no punctuation, no articles, single spaces); token F1 against the best alias is reported too.
* multiple choice: correct when the predicted letter equals the gold letter; free text is mapped to a letter by
  :func:`parse_choice`.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans(dict.fromkeys(string.punctuation + "‘’“”–—", " "))


def normalize(text: str) -> str:
    """Lower case, punctuation and articles removed, whitespace collapsed (SQuAD normalisation)."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def contains_alias(prediction: str, golds: Sequence[str]) -> bool:
    """Whether any non-empty normalised gold alias is a substring of the normalised prediction."""
    pred = normalize(prediction)
    return any(g and g in pred for g in map(normalize, golds))


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    """Token F1 of the normalised prediction against the best gold alias."""
    pred = normalize(prediction).split()
    best = 0.0
    for gold in golds:
        ref = normalize(gold).split()
        common = sum((Counter(pred) & Counter(ref)).values())
        if not common:
            continue
        precision, recall = common / len(pred), common / len(ref)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def parse_choice(text: str, choices: Mapping[str, str]) -> str | None:
    """The choice letter a free-text answer names, or None.

    In order: the answer starts with a letter ('B', '(B)', 'B) ...', 'B. ...', 'B: ...'); it says 'answer/option/
    choice (is) B' (a lower-case letter only at the end); exactly one choice letter stands alone in it (not the
    article in 'A planet ...'); it contains a choice's text (the longest such choice); its token F1 with one choice
    is at least 0.5 (the best).
    """
    keys = {k.upper(): k for k in choices if k}
    if not keys:
        return None
    alt = "|".join(re.escape(k) for k in sorted(keys, key=len, reverse=True))
    t = text.strip()
    leading = re.match(rf"^[\(\[]?({alt})(?:[\)\]\.:,]|$)", t, flags=re.IGNORECASE)
    if leading and (len(t) <= 3 or leading.group(1).isupper()):
        return keys[leading.group(1).upper()]
    named = re.search(rf"\b(?:answer|option|choice)\s*(?:is|:)?\s*[\(\[]?({alt})\b(?!')", t, flags=re.IGNORECASE)
    if named and (named.group(1).isupper() or re.fullmatch(r"\W*", t[named.end() :])):
        return keys[named.group(1).upper()]
    alone = {
        m.group(1)
        for m in re.finditer(rf"(?<![\w'])[\(\[]?({alt})[\)\]]?(?![\w'])", t)
        if not (m.group(1) == "A" and re.match(r"A\s+[a-z]", t[m.start() :]))
    }
    if len(alone) == 1:
        return keys[alone.pop().upper()]
    norm = normalize(t)
    contained = [k for k in keys.values() if normalize(choices[k]) and normalize(choices[k]) in norm]
    if contained:
        return max(contained, key=lambda k: len(normalize(choices[k])))
    overlaps = {k: token_f1(t, [choices[k]]) for k in keys.values()}
    best = max(overlaps, key=lambda k: overlaps[k])
    return best if overlaps[best] >= 0.5 else None


@dataclass(frozen=True, kw_only=True)
class Score:
    """How one answer scored."""

    correct: bool
    f1: float
    choice: str | None = None
    """Multiple choice: the letter read from the answer (None when none could be read)."""


def score_answer(prediction: str, golds: Sequence[str], choices: Mapping[str, str] | None = None) -> Score:
    """Score a prediction: choice letter for multiple choice, else alias containment and token F1."""
    if choices:
        letter = parse_choice(prediction, choices)
        correct = letter is not None and letter.upper() in {g.strip().upper() for g in golds}
        return Score(correct=correct, f1=1.0 if correct else 0.0, choice=letter)
    return Score(correct=contains_alias(prediction, golds), f1=token_f1(prediction, golds))
