"""The abstention threshold on the real default drafter (its tuned adapter, through the llamacpp backend): the
probability the drafting step reads off the first generated token is the one teacher forcing gives, a sure
abstention stands, and a threshold of 1 makes the drafter answer with its answer lead."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from app.llm.factory import make_llm
from app.llm.protocol import LanguageModel
from app.models import answer_lead
from app.settings import get_settings
from graphs.drafting import draft_prompt, parse_reply, split_lead, write_draft
from graphs.state import Passage

pytestmark = pytest.mark.integration

# Two passages that cannot answer the question (made up here; nothing from the dev set).
PASSAGES = [
    Passage(
        id="p1",
        doc_id="p1",
        title="Photosynthesis",
        text="Plants use sunlight, water and carbon dioxide to make sugars and release oxygen.",
        score=1.0,
        round=0,
    ),
    Passage(
        id="p2",
        doc_id="p2",
        title="Rivers",
        text="A river carries water from its source in the hills to a lake or to the sea.",
        score=1.0,
        round=0,
    ),
]
PROMPT = draft_prompt("Who designed the Eiffel Tower?", PASSAGES)


@pytest.fixture(scope="module")
def drafter(packaged_model: Callable[[str], Path]) -> Iterator[tuple[LanguageModel, str]]:
    s = get_settings()
    lead = answer_lead(s.drafter)
    assert lead, f"the default drafter {s.drafter.model} + {s.drafter.lora!r} has no answer lead in its data card"
    packaged_model(s.drafter.model)  # skips (fails under CI) when the packaged model cannot be provided
    llm = make_llm(s.drafter, threads=s.llm_threads, cache_dir=s.model_cache)
    yield llm, lead
    close = getattr(llm, "close", None)
    if close is not None:
        close()


def test_the_abstention_probability_is_the_teacher_forced_one_and_a_sure_abstention_stands(
    drafter: tuple[LanguageModel, str],
) -> None:
    llm, lead = drafter
    split = split_lead(lead)
    assert split is not None
    d = write_draft(llm, PROMPT, max_tokens=48, lead=lead, threshold=0.5)
    assert d.abstain_prob is not None, f"the drafter did not choose to abstain: {d.text!r}"
    forced = llm.next_token_logprobs(
        replace(PROMPT, prefill=PROMPT.prefill + " " + split.shared), [" " + split.abstain_word]
    )
    assert abs(math.log(d.abstain_prob) - forced[" " + split.abstain_word]) < 0.3
    assert d.abstain_prob > 0.5 and not d.answer_forced
    assert parse_reply(d.text).outcome == "abstain"


def test_a_threshold_of_one_makes_the_drafter_answer_with_its_lead(drafter: tuple[LanguageModel, str]) -> None:
    llm, lead = drafter
    d = write_draft(llm, PROMPT, max_tokens=48, lead=lead, threshold=1.0)
    assert d.answer_forced and d.abstain_prob is not None
    assert d.text.startswith(" " + lead)
    reply = parse_reply(d.text)
    assert reply.outcome == "answer" and reply.answer and reply.answer != "unknown", d.text
    assert math.isfinite(d.logprob) and d.logprob < math.log(1.0 - d.abstain_prob) + 1e-9
