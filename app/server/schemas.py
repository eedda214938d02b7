"""Request and response bodies: OpenAI chat completions, plus the ``specrag`` extension field.

Requests accept OpenAI's parameters (unknown ones, e.g. ``temperature``, are ignored) and two extension fields:
``thread_id`` (continue a conversation) and ``context`` (per-run knobs, validated against
``graphs.context.Context``; ``store`` is the server's to choose). Responses carry the extension object
``specrag`` (run id, thread id, sources, drafts with scores, rounds); plain OpenAI clients ignore it.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

MODELS: dict[str, Literal["speculative", "standard"]] = {
    "speculative-rag": "speculative",
    "standard-rag": "standard",
}
"""Model ids the API serves, and the graph each selects."""

THREAD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
"""What a thread id may look like (letters, digits, '_', '.', ':', '-'; at most 128 characters)."""


class ChatMessage(BaseModel):
    """One message of the conversation (content: a string or OpenAI content parts; only text is read)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text: the string, or its text parts joined."""
        if isinstance(self.content, str):
            return self.content
        parts = self.content or []
        return "\n".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")

    @model_validator(mode="after")
    def _unicode_text(self) -> ChatMessage:
        """Text the models can read: a lone surrogate (a JSON ``\\ud800`` escape) cannot be encoded as UTF-8."""
        texts = [self.content] if isinstance(self.content, str) else [p.get("text") for p in self.content or []]
        for text in texts:
            if isinstance(text, str):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as exc:
                    message = "not valid Unicode text (a lone surrogate at character {at})"
                    raise PydanticCustomError("invalid_unicode", message, {"at": exc.start}) from None
        return self


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="'speculative-rag' or 'standard-rag' (GET /v1/models)")
    messages: list[ChatMessage] = Field(min_length=1, description="The conversation; the last one is the question")
    stream: bool = Field(False, description="Server-sent events: progress, then the answer in chunks")
    thread_id: str | None = Field(None, description="Extension: continue this thread (or header X-Thread-Id)")
    context: dict[str, Any] | None = Field(None, description="Extension: per-run knobs (graphs.context.Context)")


class ModelCard(BaseModel):
    """One entry of ``GET /v1/models``."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "specrag"


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]
