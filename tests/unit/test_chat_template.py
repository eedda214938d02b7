"""Rendering prompts with a ChatML template (no model)."""

from __future__ import annotations

from app.llm.chat_template import ChatTemplate
from app.llm.protocol import ChatPrompt, Message

CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_prefix_and_tail() -> None:
    template = ChatTemplate(CHATML)
    prompt = ChatPrompt(messages=(Message(role="user", content="Q?"),), prefill="Answer:")
    assert template.prefix(prompt) == "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\nAnswer:"
    tail = template.tail(prompt, (Message(role="user", content="Sure?"),))
    assert tail == "<|im_end|>\n<|im_start|>user\nSure?<|im_end|>\n<|im_start|>assistant\n"
    full = template.render(
        (*prompt.messages, Message(role="assistant", content="Answer: X"), Message(role="user", content="Sure?")),
        add_generation_prompt=True,
    )
    assert full == template.prefix(prompt) + " X" + tail
