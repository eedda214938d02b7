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
