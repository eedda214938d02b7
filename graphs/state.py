"""Typed graph state: what each node reads and writes.

The input is narrow (a question, or a conversation whose last user turn is the question); everything else is
produced by the nodes. Fan-in fields have explicit reducers: parallel draft branches append to ``drafts``; every
round appends one ``Round``; turns are appended to ``messages`` (a thread's history under a checkpointer).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal


@dataclass(kw_only=True)
class Passage:
    """A retrieved passage."""

    id: str
    """Content-hash id of the chunk in the store."""
    doc_id: str
    """Id of the source document."""
    title: str
    """Document title."""
    text: str
    """Passage text."""
    score: float
    """Retrieval score (higher is better; reciprocal-rank fusion score for hybrid search)."""
    round: int
    """Retrieval round (0-based) that found it."""
    vector: list[float] = field(default_factory=list, repr=False)
    """Embedding, used for clustering."""


@dataclass(kw_only=True)
class Quarantined:
    """A retrieved passage set aside because it addresses the model instead of informing it (prompt injection)."""

    passage_id: str
    """The passage."""
    title: str
    """Its title."""
    round: int
    """Retrieval round that found it."""
    signals: list[str]
    """What gave it away (kind and matched words, ``graphs.safety.injection_signals``)."""


@dataclass(kw_only=True)
class PassageCompression:
    """What ``compress`` kept of one passage."""

    passage_id: str
    """The passage."""
    tier: int
    """Importance tier among this round's passages: 0 = most important third, 2 = least."""
    sentences: int
    """Sentences in the passage."""
    kept: list[int]
    """Indices of the kept sentences (original order)."""
    relevance: list[float]
    """Each sentence's cosine similarity to the question."""
    words_before: int
    """Words before compression."""
    words_after: int
    """Words after compression."""


@dataclass(kw_only=True)
class Scores:
    """The verifier's evidence for one draft. All log-probabilities are natural logs."""

    draft: float
    """log ρ_draft: the drafter's log-probability of its own rationale and answer."""
    draft_tokens: int
    """Tokens the drafter generated (rationale + answer)."""
    self_consistency: float
    """log ρ_sc: the verifier's teacher-forced log-probability of answer and rationale given the question (the
    paper's), or of the answer given question and rationale (``self_consistency_of``; ``method`` says which)."""
    self_consistency_tokens: int
    """Tokens scored for ρ_sc as the verifier tokenises them (answer + rationale, or the answer alone)."""
    self_reflection: float
    """log ρ_sr: the verifier's log P('Yes') to 'Do you think the rationale supports the answer?'."""
    self_reflection_no: float
    """The verifier's log P('No') at the same position (for inspection)."""
    total: float
    """Combined score used for ranking (sum of the enabled terms, per ``normalization``)."""
    normalization: Literal["raw", "mean"]
    """'raw': sums of log-probabilities; 'mean': ρ_draft and ρ_sc divided by their token counts."""
    method: dict[str, str] = field(default_factory=dict)
    """How each score was obtained (backend capability used), e.g. {'self_consistency': 'teacher-forced ...'}."""


@dataclass(kw_only=True)
class Draft:
    """One drafter output for one passage subset."""

    round: int
    """Retrieval round (0-based)."""
    subset: int
    """Index of the passage subset within its round."""
    passage_ids: list[str]
    """Ids of the passages the drafter saw."""
    rationale: str
    """The drafter's rationale."""
    answer: str
    """The drafter's answer."""
    text: str
    """Everything the drafter generated after the 'Rationale:' prefill."""
    parsed: bool
    """Whether the text had the expected 'Rationale: ... Answer: ...' form (an answer or an abstention)."""
    logprob: float
    """Sum of the drafter's token log-probabilities over ``text``."""
    tokens: int
    """Tokens generated."""
    prompt_tokens: int
    """Tokens of the drafter's prompt."""
    finish_reason: str
    """'stop' or 'length'."""
    scores: Scores | None = None
    """Filled in by ``verify`` (never for an abstention: it is not verified)."""
    outcome: Literal["answer", "abstain", "unparsed"] = "answer"
    """answer; abstain (the subset does not hold the answer: ranked last, not verified); unparsed (no readable
    answer line, or for multiple choice no choice letter: verified from its best guess)."""
    letter: str | None = None
    """Multiple choice: the choice letter the answer names (of the question's own order)."""
    choice_shift: int = 0
    """Multiple choice with ``rotate_choices``: the drafter saw the choice texts rotated this many places (its
    ``text`` uses the rotated letters; ``letter`` and ``answer`` are mapped back); 0: the question's order."""
    model: str = ""
    """The drafter that wrote it (``LanguageModel.name``: model, and the LoRA adapter with its sha256 prefix)."""
    abstain_rule: str = "greedy"
    """How answering was weighed against abstaining (``Context.abstain_threshold``): 'greedy', 'threshold <t>', or
    'greedy (the drafter has no answer lead)' when a threshold was asked of a drafter without one."""
    abstain_prob: float | None = None
    """Under a threshold: the drafter's probability of the abstention's word when it chose that word (None: it
    chose to answer, or no threshold applied)."""
    answer_forced: bool = False
    """Under a threshold: the drafter chose to abstain with a probability at or below it and was made to answer."""


def merge_drafts(current: list[Draft], update: list[Draft]) -> list[Draft]:
    """Reducer for ``State.drafts``: a draft with the same (round, subset) replaces the old one; new ones are
    added; the result is ordered by (round, subset), so indices are stable whatever order branches finish in."""
    merged = {(d.round, d.subset): d for d in current}
    merged.update({(d.round, d.subset): d for d in update})
    return [merged[key] for key in sorted(merged)]


@dataclass(kw_only=True)
class Confidence:
    """How likely the selected draft's answer is right, by the calibrated model (``app.confidence``)."""

    value: float
    """P(correct), 0-1 (0 when no draft answered)."""
    draft: int | None
    """Index into ``State.drafts`` of the draft it is about (None: no draft answered)."""
    inputs: dict[str, float] = field(default_factory=dict)
    """The features it was computed from (``app.confidence.features.ConfidenceInputs``)."""
    contributions: dict[str, float] = field(default_factory=dict)
    """Each feature's term in the logit: what raised or lowered the confidence."""
    votes: int = 0
    """Drafts that gave the same (normalised) answer as the selected one, itself included."""
    model: str = ""
    """The model that computed it (name and version)."""


Decision = Literal["accept", "retry", "fallback", "give_up"]
"""What reflection decides: accept the best draft; retry with a rewritten query; fall back to the verifier answering
from all passages (standard RAG in the same graph); give up (nothing was retrieved)."""


@dataclass(kw_only=True)
class Round:
    """One retrieval round and the reflection decision that closed it."""

    index: int
    """0-based round number."""
    query: str
    """The retrieval query used (the question, or a rewrite)."""
    passage_ids: list[str]
    """Passages retrieved in this round (new ones only after the first round)."""
    clusters: list[int]
    """Cluster label of each passage, aligned with ``passage_ids``."""
    subsets: list[list[str]]
    """Passage ids of each subset (one per draft)."""
    ranking: list[int]
    """Indices into ``State.drafts`` of all scored drafts so far, best first."""
    decision: Decision
    """What reflection decided."""
    confidence: Confidence | None = None
    """The confidence of the round's best draft that the decision used."""
    reason: str
    """Why, in words, with the numbers it used."""
    rewritten_query: str = ""
    """The next round's query when the decision is 'retry'."""


@dataclass(kw_only=True)
class NodeTiming:
    """Wall time of one node execution."""

    node: str
    """Node name."""
    round: int
    """Retrieval round."""
    start: float
    """Start, seconds since the epoch."""
    seconds: float
    """Duration."""


@dataclass(kw_only=True)
class ChatTurn:
    """One turn of a conversation (a thread's history)."""

    role: Literal["system", "user", "assistant"]
    """Who spoke."""
    content: str
    """What was said (plain text)."""


_ROLES: dict[str, Literal["system", "user", "assistant"]] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
}


def as_turn(message: Any) -> ChatTurn:
    """A ``ChatTurn`` from a turn as any caller may give it: a ``ChatTurn``, or a JSON object with ``role`` (or
    LangChain's ``type``: human/ai/system) and ``content`` (the LangGraph API and Studio send JSON).

    Raises:
        ValueError: Not a turn, or an unknown role.
    """
    if isinstance(message, ChatTurn):
        return message
    get = message.get if isinstance(message, dict) else lambda key, default=None: getattr(message, key, default)
    role = _ROLES.get(str(get("role", None) or get("type", None) or ""))
    content = get("content", "")
    if role is None:
        raise ValueError(f"not a chat turn (role user, assistant or system): {message!r:.80}")
    if isinstance(content, list):
        content = "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ChatTurn(role=role, content=str(content or ""))


@dataclass(kw_only=True)
class InputState:
    """What a caller provides: a ``question``, or ``messages`` ending with a user turn (a chat).

    With ``messages``, the graph starts with ``condense``, which sets ``question`` from the last user turn
    (rewritten into a standalone question when there are earlier turns). Under a checkpointer, ``messages``
    accumulates over a thread's runs: give only the new turns.
    """

    question: str = ""
    """The user's question (ignored when ``messages`` ends with a user turn). For multiple choice, the question
    with its choices as the models read it (``graphs.question.with_choices``)."""
    choices: dict[str, str] = field(default_factory=dict)
    """Multiple choice: letter -> choice text (the drafts then answer with a letter); empty otherwise."""
    messages: Annotated[list[ChatTurn], operator.add] = field(default_factory=list)
    """Conversation turns, appended to the thread's history; ``answer`` appends the assistant's reply."""


@dataclass(kw_only=True)
class State(InputState):
    """The full state of a run."""

    original_question: str = ""
    """The last user turn as written, when ``condense`` rewrote it into ``question``."""
    query: str = ""
    """Current retrieval query: the question in round 0, a rewrite afterwards."""
    round: int = 0
    """Current round (0-based)."""
    passages: list[Passage] = field(default_factory=list)
    """This round's retrieved passages."""
    all_passages: Annotated[list[Passage], operator.add] = field(default_factory=list)
    """Every passage retrieved in any round (for sources and exclusion), quarantined ones included."""
    quarantined: Annotated[list[Quarantined], operator.add] = field(default_factory=list)
    """Retrieved passages set aside as prompt injection (never shown to a model), over all rounds."""
    compression: list[PassageCompression] = field(default_factory=list)
    """This round's compression, per passage (empty when ``compress`` is off)."""
    clusters: list[int] = field(default_factory=list)
    """Cluster label per passage of this round."""
    subsets: list[list[str]] = field(default_factory=list)
    """This round's passage subsets (ids)."""
    drafts: Annotated[list[Draft], merge_drafts] = field(default_factory=list)
    """All drafts of all rounds, ordered by (round, subset); parallel branches add, ``verify`` replaces."""
    rounds: Annotated[list[Round], operator.add] = field(default_factory=list)
    """One record per finished round."""
    chosen: int | None = None
    """Index into ``drafts`` of the selected draft (None when no draft was used, e.g. after a fallback)."""
    confidence: Confidence | None = None
    """The last reflection's confidence in the best draft."""
    decision: Decision | None = None
    """The last reflection's decision; ``fallback``: the answer is the verifier's from all passages."""
    answer: str = ""
    """The final answer."""
    rationale: str = ""
    """The rationale of the final answer."""
    timings: Annotated[list[NodeTiming], operator.add] = field(default_factory=list)
    """Wall time of every node execution."""


@dataclass(kw_only=True)
class DraftTask:
    """Payload of one parallel draft branch (sent with ``Send``)."""

    question: str
    """The user's question."""
    round: int
    """Retrieval round."""
    subset: int
    """Subset index."""
    passages: list[Passage]
    """The subset's passages."""
    choices: dict[str, str] = field(default_factory=dict)
    """Multiple choice: letter -> choice text; empty otherwise."""


CHECKPOINT_TYPES: tuple[tuple[str, str], ...] = tuple(
    (__name__, cls.__name__)
    for cls in (
        ChatTurn,
        Passage,
        Quarantined,
        PassageCompression,
        Scores,
        Draft,
        Confidence,
        Round,
        NodeTiming,
        DraftTask,
    )
)
"""The state's own types, as (module, name): what a checkpointer must be allowed to deserialise."""


def state_serializer() -> Any:
    """A LangGraph checkpoint serializer that deserialises the state's dataclasses (and nothing else unknown).

    Returns:
        A ``JsonPlusSerializer`` (typed ``Any``: LangGraph's serializer protocol lives in the checkpoint package).
    """
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    return JsonPlusSerializer(allowed_msgpack_modules=list(CHECKPOINT_TYPES))
