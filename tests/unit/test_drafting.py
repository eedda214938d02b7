"""The drafter's reply contract (graphs/drafting.py): task-aware prompts, the three outcomes on every task kind, and
what the graph does with abstentions (not verified, ranked last, never selected)."""

import math
import re

import pytest

from app.llm.protocol import ChatPrompt
from graphs import speculative_rag
from graphs.backends import StaticBackends
from graphs.clustering import sample_subsets
from graphs.context import Context
from graphs.drafting import (
    ABSTAIN_ANSWER,
    abstention_reply,
    choice_letter,
    draft_prompt,
    parse_reply,
    render_reply,
)
from graphs.question import rotate_choices, unrotate_letter, with_choices
from graphs.scoring import decide, rank
from graphs.state import Confidence, Draft, InputState, Passage, Scores, State
from tests.fakes import FakeEmbedder, FakeLLM, FakeStore

CHOICES = {"A": "oxygen", "B": "carbon dioxide", "C": "nitrogen", "D": "helium"}


def passage(title: str, text: str) -> Passage:
    return Passage(id=title, doc_id=title, title=title, text=text, score=1.0, round=0)


# --- parsing: the three outcomes on short answers and on multiple choice ---------------------------------------


@pytest.mark.parametrize(
    ("text", "answer", "rationale"),
    [
        (" Paris is the capital.\nAnswer: Paris\nextra", "Paris", "Paris is the capital."),
        (" It was 1822.\nanswer: 1822", "1822", "It was 1822."),
        ("Rationale: doubled label.\nAnswer: yes", "yes", "doubled label."),
    ],
)
def test_short_answer_is_the_first_line_after_the_last_answer_label(text: str, answer: str, rationale: str) -> None:
    reply = parse_reply(text)
    assert (reply.outcome, reply.answer, reply.rationale, reply.letter) == ("answer", answer, rationale, None)


@pytest.mark.parametrize(
    "line", ["unknown", "Unknown.", "not in the documents", "The documents do not say", "N/A", "none"]
)
def test_abstention_forms_are_read_as_abstentions(line: str) -> None:
    for choices in (None, CHOICES):
        reply = parse_reply(f" The documents do not contain the answer.\nAnswer: {line}", choices)
        assert reply.outcome == "abstain" and reply.answer == ABSTAIN_ANSWER and reply.letter is None


def test_an_answer_that_merely_mentions_unknown_is_an_answer() -> None:
    reply = parse_reply(" The song is titled so.\nAnswer: Unknown Pleasures")
    assert reply.outcome == "answer" and reply.answer == "Unknown Pleasures"


@pytest.mark.parametrize(
    "line", ["B", "B)", "(B)", "B) carbon dioxide", "B. carbon dioxide", "B: carbon dioxide", "carbon dioxide"]
)
def test_mcq_answer_lines_that_name_a_letter(line: str) -> None:
    reply = parse_reply(f" Plants take in CO2.\nAnswer: {line}", CHOICES)
    assert (reply.outcome, reply.answer, reply.letter) == ("answer", "B", "B")


@pytest.mark.parametrize("line", ["photosynthesis", "E", "A plant gas", "oxygen or nitrogen"])
def test_mcq_answer_without_a_choice_letter_is_unparsed(line: str) -> None:
    reply = parse_reply(f" Something.\nAnswer: {line}", CHOICES)
    assert reply.outcome == "unparsed" and reply.letter is None and reply.answer == line


@pytest.mark.parametrize("choices", [None, CHOICES])
def test_no_answer_line_or_an_empty_one_is_unparsed(choices: dict[str, str] | None) -> None:
    reply = parse_reply(" no answer line. It is Rome.", choices)
    assert (reply.outcome, reply.answer, reply.rationale) == ("unparsed", "It is Rome.", "no answer line. It is Rome.")
    assert parse_reply(" text\nAnswer:  \n", choices).outcome == "unparsed"
    assert parse_reply("", choices).outcome == "unparsed"


def test_a_rendered_target_parses_back_to_itself() -> None:
    assert parse_reply(render_reply("The  stone was found\nin 1799.", "1799")).answer == "1799"
    reply = parse_reply(render_reply("Plants absorb it.", "B"), CHOICES)
    assert (reply.outcome, reply.letter, reply.rationale) == ("answer", "B", "Plants absorb it.")
    assert parse_reply(abstention_reply()).outcome == "abstain"
    assert parse_reply(abstention_reply(), CHOICES).outcome == "abstain"


def test_choice_letter_does_not_take_the_article_a_for_a_letter() -> None:
    assert choice_letter("A gas plants absorb", CHOICES) is None
    assert choice_letter("A) oxygen", CHOICES) == "A"
    assert choice_letter("a", {"a": "x", "b": "y"}) == "a"


# --- prompts -------------------------------------------------------------------------------------------------------


def test_prompts_follow_the_task() -> None:
    docs = [passage("Leaf", "Leaves take in carbon dioxide.")]
    question = with_choices("Which gas do plants absorb?", CHOICES)
    mcq = draft_prompt(question, docs, CHOICES)
    short = draft_prompt("Which gas do plants absorb?", docs)
    mcq_user, short_user = mcq.messages[-1].content, short.messages[-1].content
    assert "B) carbon dioxide" in mcq_user and "A, B, C or D" in mcq_user and "letter" in mcq_user
    assert "letter" not in short_user
    # No abstention instruction: asked for 'unknown', the base 0.5B drafter abstained on every draft; a tuned
    # drafter learns the fixed form from its targets.
    assert "unknown" not in short_user.lower() and "unknown" not in mcq_user.lower()
    assert mcq.prefill == short.prefill == "Rationale:"
    # The question comes before the documents, so the drafts of one question share a prefix.
    assert mcq_user.index("Which gas") < mcq_user.index("<document")


def test_with_choices_is_the_plain_question_without_choices() -> None:
    assert with_choices("Who?", None) == "Who?" and with_choices("Who?", {}) == "Who?"
    assert with_choices(" Who? ", {"A": "x", "B": "y"}).startswith("Who?\nA) x\nB) y\n")


# --- ranking and decisions -----------------------------------------------------------------------------------------


def make_draft(subset: int, outcome: str, total: float | None = None) -> Draft:
    scores = None
    if total is not None:
        scores = Scores(
            draft=total,
            draft_tokens=3,
            self_consistency=0.0,
            self_consistency_tokens=3,
            self_reflection=math.log(0.95),
            self_reflection_no=math.log(0.05),
            total=total,
            normalization="raw",
        )
    return Draft(
        round=0,
        subset=subset,
        passage_ids=[str(subset)],
        rationale="r",
        answer=ABSTAIN_ANSWER if outcome == "abstain" else f"a{subset}",
        text="t",
        parsed=outcome != "unparsed",
        outcome=outcome,  # type: ignore[arg-type]
        logprob=-1.0,
        tokens=3,
        prompt_tokens=10,
        finish_reason="stop",
        scores=scores,
    )


def test_abstentions_rank_last_whatever_the_scores() -> None:
    drafts = [make_draft(0, "abstain"), make_draft(1, "answer", -9.0), make_draft(2, "unparsed", -3.0)]
    assert rank(drafts) == [2, 1, 0]


def test_all_abstained_retries_while_rounds_remain_then_falls_back() -> None:
    drafts = [make_draft(0, "abstain"), make_draft(1, "abstain")]
    none = Confidence(value=0.0, draft=None)

    def at(round_index: int, **ctx: object) -> tuple[str, str]:
        context = Context.model_validate({"max_rounds": 2, **ctx})
        return decide(
            drafts, rank(drafts), none, round_index=round_index, new_passages=10, total_passages=20, context=context
        )

    decision, reason = at(0)
    assert decision == "retry" and "abstained" in reason
    decision, reason = at(1)
    assert decision == "fallback" and "2 drafts abstained" in reason
    decision, reason = at(1, fallback=False)
    assert decision == "give_up" and "2 drafts abstained" in reason


# --- the graph with scripted models ----------------------------------------------------------------------------------

DOCS = [
    ("Leaf", "Leaves take in carbon dioxide from the air."),
    ("Root", "Roots take up water from the soil."),
    ("Sun", "The sun gives plants light."),
    ("Soil", "Soil holds minerals."),
    ("Air", "Air is mostly nitrogen."),
    ("Rain", "Rain waters the plants."),
]


def drafter(prompt: ChatPrompt) -> str:
    """Answers when its documents mention carbon dioxide, else abstains (with a letter for multiple choice)."""
    user = prompt.messages[-1].content
    documents = user[user.index("Documents:") :]
    if "carbon dioxide" not in documents:
        return abstention_reply()
    return render_reply("Leaves take in carbon dioxide.", "B" if "A) oxygen" in user else "carbon dioxide")


def run(
    question: str,
    choices: dict[str, str],
    max_rounds: int = 1,
    docs: list[tuple[str, str]] = DOCS,
    fallback: bool = True,
) -> tuple[State, FakeLLM]:
    emb = FakeEmbedder()
    verifier = FakeLLM(reply=lambda p: "plant gas", judge=lambda c: (-1.0, 0.95))
    store = FakeStore(emb, docs)
    backends = StaticBackends(drafter=FakeLLM(reply=drafter), verifier=verifier, embedder=emb, store=store)
    graph = speculative_rag.build(lambda ctx: backends).compile()
    given = InputState(question=with_choices(question, choices), choices=choices)
    context = Context(top_n=6, n_drafts=3, per_draft=2, max_rounds=max_rounds, fallback=fallback)
    out = graph.invoke(given, context=context)
    return State(**out), verifier


@pytest.mark.parametrize("choices", [{}, CHOICES])
def test_abstentions_are_not_verified_and_the_answer_comes_from_an_answering_draft(choices: dict[str, str]) -> None:
    state, verifier = run("Which gas do plants absorb?", choices, fallback=False)
    outcomes = [d.outcome for d in state.drafts]
    assert "abstain" in outcomes and "answer" in outcomes
    answering = [d for d in state.drafts if d.outcome == "answer"]
    assert all(d.scores is not None for d in answering)
    assert all(d.scores is None for d in state.drafts if d.outcome == "abstain")
    assert verifier.calls == [f"score x{len({(d.answer, d.rationale) for d in answering})}"]  # identical: once
    assert state.chosen is not None and state.drafts[state.chosen].outcome == "answer"
    assert state.answer == ("B" if choices else "carbon dioxide")
    if choices:
        assert all(d.letter == "B" for d in answering)


def test_when_every_draft_abstains_the_verifier_reads_all_passages_or_there_is_no_answer() -> None:
    state, verifier = run("Which gas do plants absorb?", {}, max_rounds=1, docs=DOCS[1:])  # no Leaf document
    assert state.drafts and all(d.outcome == "abstain" for d in state.drafts)
    assert state.rounds[-1].decision == "fallback" and state.chosen is None
    assert state.answer == "plant gas" and verifier.calls == ["generate x1"]  # no draft verified
    state, verifier = run("Which gas do plants absorb?", {}, max_rounds=1, docs=DOCS[1:], fallback=False)
    assert state.chosen is None and state.answer == ""
    assert re.search(r"All \d drafts abstained", state.rationale)
    assert state.rounds[-1].decision == "give_up"
    assert verifier.calls == []


# --- coverage of the subsets -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels",
    [
        [0] * 9 + [1],  # a singleton cluster: it would be in every subset
        [0] * 7 + [1] * 3,
        [0] * 5 + [1] * 5,
        [0, 0, 0, 1, 1, 1, 2, 2, 2, 2],
    ],
)
def test_subsets_cover_every_passage_when_m_times_k_allows(labels: list[int]) -> None:
    for seed in range(20):
        subsets = sample_subsets(labels, 5, seed=seed)
        assert len(subsets) == 5 and len({tuple(sorted(s)) for s in subsets}) == 5
        assert {i for s in subsets for i in s} == set(range(len(labels)))
        assert all(len(set(s)) == len(s) == len(set(labels)) for s in subsets)


def test_subsets_keep_one_passage_per_cluster_where_the_clusters_allow() -> None:
    labels = [0] * 5 + [1] * 5
    for seed in range(20):
        assert all(sorted(labels[i] for i in s) == [0, 1] for s in sample_subsets(labels, 5, seed=seed))


def test_with_more_passages_than_slots_no_passage_repeats_before_all_are_used() -> None:
    labels = [0] * 8 + [1] * 8
    for seed in range(10):
        used = [i for s in sample_subsets(labels, 5, seed=seed) for i in s]
        assert len(used) == len(set(used)) == 10


def test_rotated_choices_keep_the_letters_and_map_a_letter_back() -> None:
    choices = {"A": "oxygen", "B": "carbon dioxide", "C": "helium", "D": "neon"}
    question = with_choices("Which gas do plants absorb?", choices)
    rotated = rotate_choices(question, choices, 1)
    assert rotated is not None
    text, shown = rotated
    assert shown == {"A": "carbon dioxide", "B": "helium", "C": "neon", "D": "oxygen"}
    assert "A) carbon dioxide\nB) helium\nC) neon\nD) oxygen" in text and text.startswith("Which gas")
    assert all(choices[unrotate_letter(k, choices, 1)] == v for k, v in shown.items())
    assert rotate_choices(question, choices, 4) is None  # a full turn: the question's own order
    assert rotate_choices("Which gas? (choices in another form)", choices, 1) is None


def test_with_rotation_a_drafter_that_always_names_c_names_a_different_choice_per_draft() -> None:
    """A position-biased drafter (it answers C whatever it reads) agrees with itself only without rotation."""
    choices = {"A": "oxygen", "B": "carbon dioxide", "C": "helium", "D": "neon"}
    emb = FakeEmbedder()
    seen: list[str] = []

    def always_c(prompt: ChatPrompt) -> str:
        seen.append(prompt.messages[-1].content)
        return render_reply("The documents say so.", "C")

    drafter = FakeLLM(reply=always_c)
    backends = StaticBackends(
        drafter=drafter,
        verifier=FakeLLM(reply=lambda p: "B", judge=lambda c: (-1.0, 0.95)),
        embedder=emb,
        store=FakeStore(emb, DOCS),
    )
    graph = speculative_rag.build(lambda ctx: backends).compile()
    given = InputState(question=with_choices("Which gas do plants absorb?", choices), choices=choices)
    letters = {}
    for rotate in (False, True):
        context = Context(top_n=6, n_drafts=3, per_draft=2, max_rounds=1, fallback=False, rotate_choices=rotate)
        state = State(**graph.invoke(given, context=context))
        letters[rotate] = [(d.subset, d.choice_shift, d.letter) for d in sorted(state.drafts, key=lambda d: d.subset)]
    assert letters[False] == [(0, 0, "C"), (1, 0, "C"), (2, 0, "C")]
    # subset i saw the texts rotated i places: its 'C' shows the text of the original letter i + 2
    assert letters[True] == [(0, 0, "C"), (1, 1, "D"), (2, 2, "A")]
    assert any("A) carbon dioxide" in u for u in seen) and any("A) oxygen" in u for u in seen)
