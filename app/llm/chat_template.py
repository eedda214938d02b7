"""Render ``ChatPrompt`` objects with a model's own Jinja2 chat template (from the GGUF metadata).

The environment mirrors Hugging Face Transformers' (and llama-cpp-python's ``Jinja2ChatFormatter``):
sandboxed, ``trim_blocks``/``lstrip_blocks``, loop controls, ``raise_exception``, ``strftime_now`` and a
``tojson`` filter that does not escape non-ASCII text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from app.llm.protocol import ChatPrompt, Message

# A marker that no tokenizer merges with its neighbours and no user text contains.
_SENTINEL = "\u2063\u2063SPECRAG-SPLIT\u2063\u2063"


class _IgnoreGenerationTags(jinja2.ext.Extension):
    """Pass-through for Hugging Face's ``{% generation %}`` tag."""

    tags = {"generation"}  # noqa: RUF012 (jinja2 API)

    def parse(self, parser: Any) -> Any:
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    raise ValueError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _as_dicts(messages: Sequence[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


class ChatTemplate:
    """A compiled chat template.

    Args:
        template: The Jinja2 source (GGUF ``tokenizer.chat_template``).
        bos_token: Text of the BOS token (templates may reference ``bos_token``).
        eos_token: Text of the EOS token.
    """

    def __init__(self, template: str, *, bos_token: str = "", eos_token: str = "") -> None:
        env = ImmutableSandboxedEnvironment(
            loader=jinja2.BaseLoader(),
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[_IgnoreGenerationTags, jinja2.ext.loopcontrols],
        )
        env.filters["tojson"] = _tojson
        self._template = env.from_string(template)
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool) -> str:
        """Render messages; with ``add_generation_prompt`` the text ends with an open assistant turn."""
        return self._template.render(
            messages=_as_dicts(messages),
            bos_token=self.bos_token,
            eos_token=self.eos_token,
            add_generation_prompt=add_generation_prompt,
            raise_exception=_raise_exception,
            strftime_now=_strftime_now,
        )

    def prefix(self, prompt: ChatPrompt) -> str:
        """The prompt up to the open assistant turn, followed by the prefill."""
        return self.render(prompt.messages, add_generation_prompt=True) + prompt.prefill

    def prefix_parts(self, prompt: ChatPrompt) -> list[tuple[str, bool]]:
        """:meth:`prefix` cut into ``(text, is_content)`` pieces: the template's own text (markup, role names,
        the prefill) and each message's content as given, so a tokenizer can read control tokens in the former
        and never in the latter (a document or question that contains ``<|im_start|>`` stays text).

        Found by rendering with a unique sentinel as each message's content and splitting at the sentinels.

        Raises:
            ValueError: the template drops, duplicates or reorders message contents.
        """
        marks = [f"\u2063\u2063SPECRAG-CONTENT-{i}\u2063\u2063" for i in range(len(prompt.messages))]
        placeheld = [Message(role=m.role, content=mark) for m, mark in zip(prompt.messages, marks, strict=True)]
        rest = self.render(placeheld, add_generation_prompt=True) + prompt.prefill
        parts: list[tuple[str, bool]] = []
        for message, mark in zip(prompt.messages, marks, strict=True):
            if rest.count(mark) != 1:
                raise ValueError("the chat template does not render message contents verbatim")
            before, rest = rest.split(mark, 1)
            parts += [(before, False), (message.content, True)]
        parts.append((rest, False))
        return [(text, content) for text, content in parts if text]

    def tail(self, prompt: ChatPrompt, followup: Sequence[Message]) -> str:
        """Text after the assistant content: end of that turn, the follow-up turns, a new assistant turn.

        Found by rendering the conversation with a sentinel as the assistant content and splitting at it,
        so it is exactly what the template puts there.

        Raises:
            ValueError: the template drops or duplicates the assistant content.
        """
        assistant = Message(role="assistant", content=prompt.prefill + _SENTINEL)
        text = self.render((*prompt.messages, assistant, *followup), add_generation_prompt=True)
        if text.count(_SENTINEL) != 1:
            raise ValueError("the chat template does not render the assistant content verbatim")
        return text.split(_SENTINEL, 1)[1]
