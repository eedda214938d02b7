"""Neutralising control sequences in untrusted text (retrieved passages, and drafts that may have copied them).

Retrieved documents are data. A document can try to act as instructions: chat-template markup that would open a new
turn (``<|im_start|>system``), a fake end of the ``<document>`` delimiter the prompts wrap passages in, lines that
imitate the drafter's reply format (``Answer: ...``) or a role (``System: ...``), or the verifier's own question.
:func:`neutralize` rewrites exactly those into inert text and leaves everything else as it was; the prompts also say
that documents are data, and the llama.cpp backend never parses message contents as special tokens.
"""

from __future__ import annotations

import re

# Chat-template control markup of common model families: ChatML / Llama 3 (<|...|>), Llama 2 ([INST], <<SYS>>, <s>),
# Gemma (<start_of_turn>, <end_of_turn>).
_MARKUP = re.compile(
    r"<\|[^<>|\n]{1,40}\|>|</?s>|\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>",
    re.IGNORECASE,
)
_DOCUMENT_TAG = re.compile(r"<\s*(/?)\s*document\b([^>\n]*)>?", re.IGNORECASE)
_LABEL = re.compile(
    r"^([ \t>#*-]*)(rationale|answer|question|system|user|assistant|instruction|response)(\s*)([:：])",
    re.IGNORECASE | re.MULTILINE,
)
_HEADING = re.compile(
    r"^[ \t]*#{1,6}[ \t]*(?=(?:instruction|response|system|user|assistant)\b)", re.IGNORECASE | re.MULTILINE
)
_VERIFIER = re.compile(
    r"[^.?!\n]*rationale\s+supports?\s+the\s+answer[^.?!\n]*[.?!]?(?:\s*\(?yes\b[^.?!\n]*[.?!]?)?", re.IGNORECASE
)


def neutralize(text: str) -> str:
    """``text`` with control sequences made inert (see the module docstring); plain prose is unchanged.

    * chat markup is removed;
    * ``<document ...>`` / ``</document>`` become ``[document ...]`` / ``[/document]`` (they cannot close the
      delimiter the prompt put around the passage);
    * a line starting with a reply or role label (``Answer:``, ``Rationale:``, ``System:``, ``### Instruction``)
      keeps its words but loses the form: ``Answer:`` becomes ``(quoted) Answer -``;
    * sentences that pose the verifier's question ("... the rationale supports the answer ...") are dropped.
    """
    text = _MARKUP.sub(" ", text)
    text = _DOCUMENT_TAG.sub(lambda m: f"[{m.group(1)}document{m.group(2).rstrip()}]", text)
    text = _VERIFIER.sub(" ", text)
    text = _HEADING.sub("", text)
    text = _LABEL.sub(lambda m: f"{m.group(1)}(quoted) {m.group(2)}{m.group(3)} -", text)
    return text


_SIGNALS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("chat markup", _MARKUP),
    ("document delimiter", _DOCUMENT_TAG),
    ("reply format", re.compile(r"^[ \t>#*-]*rationale\s*[:：]", re.IGNORECASE | re.MULTILINE)),
    ("verifier question", re.compile(r"rationale\s+supports?\s+the\s+answer", re.IGNORECASE)),
    (
        "instruction to ignore",
        re.compile(
            r"\b(?:ignore|disregard|forget|override)\b[^.!?\n]{0,60}?\b(?:question|instructions?|prompt|documents?"
            r"|context|rules|everything|above)\b",
            re.IGNORECASE,
        ),
    ),
    (
        "instruction to answer",
        re.compile(
            r"\b(?:reply|respond|answer)\s+(?:only\s+|exactly\s+|always\s+)?with\b"
            r"|\b(?:always|only)\s+(?:answer|reply|respond|say)\s*(?:with\b|[\"'“:])"
            r"|\b(?:you|assistant|the model|the ai)\s+(?:must|should|shall|will|are required to|are to)\s+"
            r"(?:now\s+|always\s+)?(?:answer|reply|respond|say|output|ignore)\b",
            re.IGNORECASE,
        ),
    ),
    (
        "answer for any question",
        re.compile(
            r"\b(?:whatever|regardless of|no matter)\b[^.!?\n]{0,30}?\b(?:question|asks?|asked|user)\b"
            r"|\bfor (?:every|any|all|each) questions?\b",
            re.IGNORECASE,
        ),
    ),
    (
        "mode or policy switch",
        re.compile(
            r"\b(?:new|updated)\s+(?:policy|instructions?|system prompt)\b|\bsystem\s+(?:message|notice|prompt|"
            r"instructions?|override)\b|\b(?:test|debug|developer|admin|god)\s+mode\b|\bprevious instructions\b",
            re.IGNORECASE,
        ),
    ),
)


def injection_signals(text: str) -> list[str]:
    """What in ``text`` addresses the model rather than informs it: each kind found, with the matched words.

    A retrieved passage with any of these is an attempt to steer the answer (prompt injection), not evidence;
    ``retrieve`` sets such passages aside (``quarantine_instructions``) and the trace lists them with these reasons.
    """
    found = []
    for kind, pattern in _SIGNALS:
        match = pattern.search(text)
        if match:
            found.append(f"{kind}: {' '.join(match.group(0).split())[:60]!r}")
    return found
