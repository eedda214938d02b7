"""The abstention threshold of the drafting step (``Context.abstain_threshold``, ``graphs.drafting.write_draft``):
a tuned drafter abstains only when it is that sure; below it the draft is written again with the answer lead."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import pytest
from rich.console import Console

from app.ask import render
from app.llm.protocol import ChatPrompt, Generation
from graphs import speculative_rag
from graphs.backends import StaticBackends
from graphs.context import Context
from graphs.drafting import LeadSplit, draft_prompt, parse_reply, split_lead, write_draft
from graphs.result import to_result
from graphs.state import InputState, Passage, State
from tests.fakes import FakeEmbedder, FakeLLM, FakeStore

LEAD = "The documents say:"


@dataclass
class LeadDrafter(FakeLLM):
    """A scripted tuned drafter: after "Rationale: The documents" it abstains (" do ...") with probability
    ``p_abstain`` when its documents lack "carbon dioxide", else answers (" say: ..."); with the whole lead
    pre-filled it answers, a guess ("oxygen") when the documents lack the answer."""

    reply: Callable[[ChatPrompt], str] = lambda p: ""
    p_abstain: float = 0.9
    name: str = "lead-drafter"
    prefills: list[str] = field(default_factory=list)

    def generate(
        self, prompts: Sequence[ChatPrompt], *, max_tokens: int = 256, stop: Sequence[str] = ()
    ) -> list[Generation]:
        out = []
        for p in prompts:
            self.prefills.append(p.prefill)
            has = "carbon dioxide" in p.messages[-1].content.split("Documents:", 1)[-1]
            answer = "carbon dioxide" if has else "oxygen"
            if p.prefill.endswith(LEAD):
                text, first = f" Leaves take in {answer}.\nAnswer: {answer}", -0.2
            elif p.prefill.endswith("The documents") and not has:
                text, first = " do not contain the answer.\nAnswer: unknown", math.log(self.p_abstain)
            elif p.prefill.endswith("The documents"):
                text, first = " say: Leaves take in carbon dioxide.\nAnswer: carbon dioxide", math.log(0.97)
            else:  # no lead pre-filled: greedy as trained
                text, first = f" The documents say: Leaves take in {answer}.\nAnswer: {answer}", -0.05
            out.append(Generation(text=text, token_logprobs=(first, -0.1, -0.1), finish_reason="stop", prompt_tokens=9))
        return out


def passage(title: str, text: str) -> Passage:
    return Passage(id=title, doc_id=title, title=title, text=text, score=1.0, round=0)


WITHOUT = draft_prompt("Which gas do plants absorb?", [passage("Root", "Roots take up water from the soil.")])
WITH = draft_prompt("Which gas do plants absorb?", [passage("Leaf", "Leaves take in carbon dioxide from the air.")])


def test_the_lead_splits_from_the_abstention_at_their_first_different_word() -> None:
    assert split_lead(LEAD) == LeadSplit(shared="The documents", answer_word="say", abstain_word="do")
    assert split_lead("") is None
    assert split_lead("Evidence:") is None  # no shared opening
    assert split_lead("The documents") is None  # nothing left to choose between


def test_without_a_threshold_the_draft_is_greedy_and_one_generation() -> None:
    llm = LeadDrafter()
    d = write_draft(llm, WITHOUT, max_tokens=64, lead=LEAD, threshold=None)
    assert llm.prefills == ["Rationale:"]
    assert (d.abstain_rule, d.abstain_prob, d.answer_forced) == ("greedy", None, False)
    assert d.logprob == pytest.approx(-0.25)


def test_a_sure_abstention_stands() -> None:
    llm = LeadDrafter(p_abstain=0.9)
    d = write_draft(llm, WITHOUT, max_tokens=64, lead=LEAD, threshold=0.8)
    assert llm.prefills == ["Rationale: The documents"]
    assert parse_reply(d.text).outcome == "abstain"
    assert d.text.startswith(" The documents do not contain the answer.")
    assert d.abstain_prob == pytest.approx(0.9) and not d.answer_forced
    assert d.abstain_rule == "threshold 0.8"


def test_an_unsure_abstention_is_written_again_with_the_answer_lead() -> None:
    llm = LeadDrafter(p_abstain=0.6)
    d = write_draft(llm, WITHOUT, max_tokens=64, lead=LEAD, threshold=0.8)
    assert llm.prefills == ["Rationale: The documents", "Rationale: The documents say:"]
    reply = parse_reply(d.text)
    assert (reply.outcome, reply.answer) == ("answer", "oxygen")
    assert reply.rationale.startswith("The documents say: Leaves take in oxygen.")
    assert d.abstain_prob == pytest.approx(0.6) and d.answer_forced
    # the generated tokens, plus log P(answer word) ~ log(1 - P(abstention word)) for the word it was given
    assert d.logprob == pytest.approx(-0.4 + math.log(0.4))


def test_a_threshold_of_one_never_abstains_and_an_answer_is_never_rewritten() -> None:
    assert write_draft(LeadDrafter(p_abstain=0.99), WITHOUT, max_tokens=64, lead=LEAD, threshold=1.0).answer_forced
    llm = LeadDrafter()
    d = write_draft(llm, WITH, max_tokens=64, lead=LEAD, threshold=0.8)
    assert llm.prefills == ["Rationale: The documents"]
    assert parse_reply(d.text).answer == "carbon dioxide"
    assert d.abstain_prob is None and not d.answer_forced


def test_multiple_choice_and_a_drafter_without_a_lead_stay_greedy() -> None:
    llm = LeadDrafter()
    mcq = write_draft(llm, WITHOUT, max_tokens=64, lead=LEAD, threshold=0.8, choices={"A": "oxygen", "B": "CO2"})
    assert mcq.abstain_rule == "greedy"
    plain = write_draft(llm, WITHOUT, max_tokens=64, lead="", threshold=0.8)
    assert plain.abstain_rule == "greedy (the drafter has no answer lead)"
    assert llm.prefills == ["Rationale:", "Rationale:"]


DOCS = [
    ("Leaf", "Leaves take in carbon dioxide from the air."),
    ("Root", "Roots take up water from the soil."),
    ("Sun", "The sun gives plants light."),
    ("Soil", "Soil holds minerals."),
]


def run(threshold: float | None) -> State:
    emb = FakeEmbedder()
    verifier = FakeLLM(reply=lambda p: "plant gas", judge=lambda c: (-1.0, 0.95))
    drafter = LeadDrafter(p_abstain=0.9)
    backends = StaticBackends(
        drafter=drafter, verifier=verifier, embedder=emb, store=FakeStore(emb, DOCS), drafter_lead=LEAD
    )
    graph = speculative_rag.build(lambda ctx: backends).compile()
    context = Context(top_n=4, n_drafts=2, per_draft=2, max_rounds=1, fallback=False, abstain_threshold=threshold)
    return State(**graph.invoke(InputState(question="Which gas do plants absorb?"), context=context))


@pytest.mark.parametrize(("threshold", "forced"), [(None, False), (0.95, True), (0.8, False)])
def test_the_graph_records_the_rule_the_probability_and_the_forced_answers(
    threshold: float | None, forced: bool
) -> None:
    state = run(threshold)
    titles = {p.id: p.title for p in state.passages}
    without = [d for d in state.drafts if "Leaf" not in {titles[i] for i in d.passage_ids}]
    assert without, "a subset without the Leaf document"
    for d in without:
        assert d.abstain_rule == ("greedy" if threshold is None else f"threshold {threshold:g}")
        assert d.answer_forced is forced
        assert d.outcome == ("answer" if forced else "abstain" if threshold is not None else "answer")
        assert d.abstain_prob == (None if threshold is None else pytest.approx(0.9))
    if threshold is not None:  # greedy, the two drafts tie on every score; here the forced guess scores lower
        assert state.answer == "carbon dioxide"


@pytest.mark.parametrize(("threshold", "shown"), [(0.95, "made to answer: P(abstain) 0.90"), (0.8, "P 0.90 > 0.8")])
def test_the_terminal_table_and_the_json_result_show_the_decision(threshold: float, shown: str) -> None:
    result = to_result(run(threshold), graph="speculative_rag", seconds=1.0)
    console = Console(width=200, record=True, highlight=False)
    render(result, console)
    assert shown in console.export_text()
    drafts = json.loads(result.model_dump_json())["drafts"]
    assert {d["abstain_rule"] for d in drafts} == {f"threshold {threshold:g}"}
    assert any(d["abstain_prob"] == pytest.approx(0.9) and d["answer_forced"] is (threshold == 0.95) for d in drafts)


def test_tune_check_drafts_as_the_graph_does_under_a_threshold() -> None:
    from app.tune.check import sample_drafts
    from app.tune.data import ExamplePassage, TuneExample

    def example(outcome: Literal["answer", "abstain"], text: str, answer: str) -> TuneExample:
        return TuneExample(
            id=f"nq-1#{outcome}",
            question_id="nq-1",
            source="nq",
            task="short_qa",
            question="Which gas do plants absorb?",
            passages=[ExamplePassage(title="T", text=text, from_question="nq-1")],
            subset=[0],
            n_candidates=1,
            outcome=outcome,
            rationale="",
            answer=answer,
            target="",
        )

    examples = [
        example("abstain", "Roots take up water from the soil.", "unknown"),
        example("answer", "Leaves take in carbon dioxide from the air.", "carbon dioxide"),
    ]
    unsure = sample_drafts(LeadDrafter(p_abstain=0.6), examples, lead=LEAD, threshold=0.8)
    assert [(d.outcome, d.answer_forced, d.correct) for d in unsure] == [
        ("answer", True, False),
        ("answer", False, True),
    ]
    sure = sample_drafts(LeadDrafter(p_abstain=0.9), examples, lead=LEAD, threshold=0.8)
    assert [(d.outcome, d.correct) for d in sure] == [("abstain", True), ("answer", True)]
    assert sure[0].abstain_prob == pytest.approx(0.9)
    greedy = sample_drafts(LeadDrafter(), examples)  # no lead pre-filled: the scripted drafter guesses
    assert [d.outcome for d in greedy] == ["answer", "answer"] and greedy[0].abstain_prob is None
