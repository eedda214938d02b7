"""Split documents into passages, and give each a content-based id.

Short texts (at most :data:`MAX_SINGLE_CHUNK_WORDS` words, e.g. the ~100-word passages of the shared corpora) stay
whole. Longer ones are cut into windows of about :data:`WINDOW_WORDS` words that overlap by about
:data:`OVERLAP_WORDS`, at sentence ends (paragraph breaks are sentence ends too); a single sentence longer than a
window is cut between words.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from app.store.loaders import Document

MAX_SINGLE_CHUNK_WORDS = 250
WINDOW_WORDS = 200
OVERLAP_WORDS = 40
_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+")


@dataclass(frozen=True, kw_only=True)
class ChunkText:
    """A passage before embedding."""

    id: str
    doc_id: str
    title: str
    text: str


def chunk_id(doc_id: str, text: str) -> str:
    """Content-based chunk id: the first 32 hex digits of sha256(doc_id + NUL + text)."""
    return hashlib.sha256(f"{doc_id}\0{text}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class _Unit:
    text: str
    words: int
    paragraph: int


def _units(text: str, max_words: int) -> list[_Unit]:
    """Sentences (each at most ``max_words`` words), tagged with their paragraph number."""
    units = []
    for number, paragraph in enumerate(p for p in _PARAGRAPH.split(text) if p.strip()):
        flat = " ".join(paragraph.split())
        for sentence in _SENTENCE_END.split(flat):
            words = sentence.split()
            for start in range(0, len(words), max_words):
                piece = words[start : start + max_words]
                units.append(_Unit(" ".join(piece), len(piece), number))
    return units


def split_sentences(text: str) -> list[str]:
    """The sentences of a text, in order, whitespace collapsed (paragraph breaks end sentences too)."""
    return [
        " ".join(s.split())
        for p in _PARAGRAPH.split(text)
        for s in _SENTENCE_END.split(" ".join(p.split()))
        if s.strip()
    ]


def _join(units: list[_Unit]) -> str:
    out: list[str] = []
    for i, unit in enumerate(units):
        if i > 0:
            out.append("\n\n" if unit.paragraph != units[i - 1].paragraph else " ")
        out.append(unit.text)
    return "".join(out)


def split_text(
    text: str,
    *,
    max_single: int = MAX_SINGLE_CHUNK_WORDS,
    window: int = WINDOW_WORDS,
    overlap: int = OVERLAP_WORDS,
) -> list[str]:
    """Split a text into passages.

    Args:
        text: The text.
        max_single: Texts of at most this many words are returned whole (whitespace kept as is).
        window: Target words per passage for longer texts.
        overlap: Target words repeated from the end of one passage at the start of the next.

    Returns:
        The passages, in order (none for a blank text).
    """
    text = text.strip()
    if not text:
        return []
    if len(text.split()) <= max_single:
        return [text]
    units = _units(text, window)
    passages: list[str] = []
    start = 0
    while start < len(units):
        end, words = start, 0
        while end < len(units) and (end == start or words + units[end].words <= window):
            words += units[end].words
            end += 1
        passages.append(_join(units[start:end]))
        if end >= len(units):
            break
        # Step back over whole sentences worth at most `overlap` words, but always move forward.
        next_start, carried = end, 0
        while next_start - 1 > start and carried + units[next_start - 1].words <= overlap:
            next_start -= 1
            carried += units[next_start].words
        start = next_start
    return passages


def chunk_document(document: Document) -> list[ChunkText]:
    """The passages of a document, with ids (see :func:`chunk_id`)."""
    return [
        ChunkText(id=chunk_id(document.doc_id, text), doc_id=document.doc_id, title=document.title, text=text)
        for text in split_text(document.text)
    ]
