import pytest

from graphs import prompting


def test_every_prompt_file_loads_with_its_sections() -> None:
    assert prompting.load("drafter").placeholders("user") == {"passages", "question"}
    assert prompting.load("drafter").sections["prefill"] == "Rationale:"
    assert prompting.load("verifier").placeholders("continuation") == {"answer", "rationale"}
    assert "supports the answer" in prompting.load("verifier").text("followup")
    assert prompting.load("standard_answer").placeholders("user") == {"passages", "question"}
    assert prompting.load("rewrite_query").placeholders("user") == {"question", "query", "answer"}
    assert prompting.load("rewrite_query").sections["prefill"] == "Keywords:"


def test_wrong_placeholders_are_refused() -> None:
    with pytest.raises(prompting.PromptError):
        prompting.load("drafter").chat(question="q")
    with pytest.raises(prompting.PromptError):
        prompting.load("drafter").chat(question="q", passages="p", extra="x")
    with pytest.raises(prompting.PromptError):
        prompting.load("no-such-prompt")


def test_values_with_braces_are_inserted_verbatim() -> None:
    chat = prompting.load("drafter").chat(question="what is {x}?", passages="doc {y}")
    assert "what is {x}?" in chat.messages[-1].content and "doc {y}" in chat.messages[-1].content
    assert chat.messages[0].role == "system" and chat.prefill == "Rationale:"
