"""Prompt templates from ``prompts/*.md``.

A template file is split into named sections by lines ``<!-- name -->`` (other ``<!-- ... -->`` comments are
ignored). Placeholders are ``{name}``; rendering checks that exactly the template's placeholders are given.
Known sections: ``system``, ``user``, ``prefill`` (start of the assistant turn), ``continuation`` and
``followup`` (verifier), ``text`` (plain fragments).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from functools import cache

from app.llm.protocol import ChatPrompt, Message
from app.resources import data_dir

PROMPTS_DIR = data_dir("prompts")
_SECTION = re.compile(r"^<!--\s*([a-z_]+)\s*-->\s*$")
_COMMENT = re.compile(r"<!--.*?-->\s*", re.DOTALL)


class PromptError(ValueError):
    """A template is missing, malformed or rendered with the wrong placeholders."""


@dataclass(frozen=True)
class Template:
    """One prompt file."""

    name: str
    sections: dict[str, str]

    def placeholders(self, section: str) -> set[str]:
        """Placeholder names used in a section."""
        return {f for _, f, _, _ in string.Formatter().parse(self.sections.get(section, "")) if f}

    def text(self, section: str, **values: str) -> str:
        """Render one section with exactly its placeholders."""
        if section not in self.sections:
            raise PromptError(f"prompt {self.name!r} has no section {section!r}")
        wanted = self.placeholders(section)
        if wanted != set(values):
            raise PromptError(f"prompt {self.name!r} section {section!r} needs {sorted(wanted)}, got {sorted(values)}")
        return self.sections[section].format(**values)

    def chat(self, **values: str) -> ChatPrompt:
        """Render system + user (+ prefill) into a ChatPrompt."""
        user_values = {k: v for k, v in values.items() if k in self.placeholders("user")}
        extra = set(values) - set(user_values)
        if extra:
            raise PromptError(f"prompt {self.name!r}: unknown placeholders {sorted(extra)}")
        messages = [Message(role="user", content=self.text("user", **user_values))]
        if "system" in self.sections:
            messages.insert(0, Message(role="system", content=self.sections["system"]))
        return ChatPrompt(messages=tuple(messages), prefill=self.sections.get("prefill", ""))


@cache
def load(name: str) -> Template:
    """Load ``prompts/<name>.md``."""
    path = PROMPTS_DIR / f"{name}.md"
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise PromptError(f"no prompt template {path}") from exc
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in raw.splitlines():
        match = _SECTION.match(line)
        if match:
            current = sections.setdefault(match.group(1), [])
        elif current is not None:
            current.append(line)
    if not sections:
        raise PromptError(f"prompt template {path} has no <!-- section --> markers")
    return Template(name=name, sections={k: _COMMENT.sub("", "\n".join(v)).strip() for k, v in sections.items()})
