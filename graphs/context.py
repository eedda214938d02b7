"""Per-run configuration: every knob of the method, with a description (LangGraph Studio renders a form).

Defaults follow the paper's setting where it has one (k = 2 passages per draft from the top-10), except the number
of drafts: the paper drafts m = 5; here m = 3 answered as well at about half the time (``n_drafts``).
Context values are never read from the environment: per-run overrides come from the caller (CLI options,
Studio's form, the API's ``context``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.confidence.model import SelfConsistencyOf

ACCEPT_CONFIDENCE = 0.55
"""Default of ``accept_confidence``: the threshold chosen on the calibration set (``app.confidence.fit``; the
bundled model's ``accept_confidence`` says the same, which a test checks)."""


class Context(BaseModel):
    """Knobs for one Speculative RAG (or standard RAG) run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: str = Field(
        default="",
        description="Knowledge base directory to retrieve from. Empty: the store path from settings.",
    )
    top_n: int = Field(default=10, ge=1, le=100, description="Passages retrieved per round (hybrid top-n).")
    search_mode: Literal["hybrid", "vector", "text"] = Field(
        default="hybrid",
        description="Retrieval: hybrid (vector + BM25, rank fusion), vector only or BM25 only.",
    )
    n_drafts: int = Field(
        default=3,
        ge=1,
        le=32,
        description=(
            "m: number of drafts (unique passage subsets) per round. 3 answered as well as the paper's 5 on the "
            "dev and held-out sets at about half the time (docs/benchmarks.md); 2 loses accuracy."
        ),
    )
    per_draft: int = Field(
        default=2,
        ge=1,
        le=10,
        description="k: passages per draft, which is also the number of k-means clusters.",
    )
    quarantine_instructions: bool = Field(
        default=True,
        description=(
            "Set aside retrieved passages that address the model instead of informing it (chat markup, fake "
            "document delimiters or reply lines, 'ignore the question', 'always answer ...'): prompt injection. "
            "The trace lists each with what gave it away."
        ),
    )
    compress: bool = Field(
        default=False,
        description=(
            "Compress passages before drafting: keep the sentences most similar to the question, more of the most "
            "relevant passages, about compress_target of the words in all. The fallback (the verifier reading all "
            "passages) still reads them as retrieved unless compress_answer is on."
        ),
    )
    compress_answer: bool = Field(
        default=False,
        description=(
            "Compress the passages that one model reads to answer from all of them: standard RAG's answer and "
            "Speculative RAG's fallback (with compress on). Off by default: on dev150 the 1.5B reader lost 11 "
            "points on compressed passages (docs/eval/dev150)."
        ),
    )
    compress_target: float = Field(
        default=0.15,
        gt=0.0,
        le=1.0,
        description=(
            "With compress: fraction of the passages' words to keep (0.15 keeps about 15%; the drafter prompt "
            "shrinks by less, about 44%, because its instructions and the question are not compressed)."
        ),
    )
    partition: Literal["kmeans", "random"] = Field(
        default="kmeans",
        description=(
            "How subsets are formed: 'kmeans' (the paper: one passage per cluster, so each draft sees different "
            "perspectives) or 'random' (k passages drawn at random; the ablation without clustering)."
        ),
    )
    seed: int = Field(default=0, description="Seed for k-means and subset sampling (same seed, same subsets).")
    draft_max_tokens: int = Field(
        default=160,
        ge=8,
        le=1024,
        description="Maximum tokens the drafter writes per draft (rationale + answer).",
    )
    abstain_threshold: float | None = Field(
        default=None,
        ge=0.5,
        le=1.0,
        description=(
            "Short-answer drafts of a tuned drafter (one with an answer lead, e.g. 'The documents say:'): abstain "
            "only when the drafter's probability of the abstention's first word after the shared opening "
            "('The documents do ...') is above this; at or below it the draft is written again with the answer "
            "lead. Empty: greedy (abstain when that word is the likelier). 1.0: never abstain."
        ),
    )
    answer_max_tokens: int = Field(default=96, ge=8, le=1024, description="Maximum tokens of a standard-RAG answer.")
    self_consistency_of: SelfConsistencyOf = Field(
        default="answer_given_rationale",
        description=(
            "What ρ_sc measures: 'answer_given_rationale' (the default) is P(answer | question, rationale): the "
            "verifier reads the draft's rationale and scores only its answer, so a long or oddly worded rationale "
            "is not penalised for its own tokens; 'answer_and_rationale' is the paper's P(answer, rationale | "
            "question). The confidence model must be fitted on the same scoring."
        ),
    )
    score_normalization: Literal["raw", "mean"] = Field(
        default="raw",
        description=(
            "How log-probabilities enter the total: 'raw' sums them as in the paper (product of probabilities); "
            "'mean' divides ρ_draft and ρ_sc by their token counts (length-normalised)."
        ),
    )
    use_draft_score: bool = Field(default=True, description="Include ρ_draft (drafter's own probability) in the total.")
    use_self_consistency: bool = Field(
        default=True,
        description="Include ρ_sc (verifier's probability of answer and rationale) in the total.",
    )
    use_self_reflection: bool = Field(
        default=True, description="Include ρ_sr (verifier's P('Yes') that the rationale supports the answer)."
    )
    selection: Literal["score", "vote"] = Field(
        default="score",
        description=(
            "How the best draft is chosen: 'score' (the paper: highest ρ_draft · ρ_sc · ρ_sr) or 'vote' (the "
            "answer with the largest score-weighted vote over drafts that give it, then its best-scored draft)."
        ),
    )
    verify_agreed: bool = Field(
        default=False,
        description=(
            "Without a confidence model (confidence_model 'none', the paper's graph): verify the drafts even when "
            "every draft that answered gives the same answer. Off (the default): such a round skips the verifier, "
            "whose scores could not change the answer, and keeps the draft with the highest ρ_draft per token; "
            "the decision's reason says so. The default graph always verifies (its confidence reads the scores)."
        ),
    )
    rotate_choices: bool = Field(
        default=False,
        description=(
            "Multiple choice: the drafter of subset i sees the choice texts rotated i places under the same "
            "letters (its letter is mapped back), so a drafter that favours one position does not make every draft "
            "agree on it."
        ),
    )
    max_rounds: int = Field(
        default=2, ge=1, le=5, description="Retrieval rounds at most (1 = never rewrite the query)."
    )
    accept_confidence: float = Field(
        default=ACCEPT_CONFIDENCE,
        ge=0.0,
        le=1.0,
        description=(
            "Accept the best draft when its calibrated confidence (P(correct) from the agreement among drafts, "
            "the verifier's scores and the margin to the runner-up) is at least this; below it, fall back (or "
            "retry, see retry_on). The default was chosen on held-out training-pool questions (app/confidence)."
        ),
    )
    fallback: bool = Field(
        default=True,
        description=(
            "Below accept_confidence (and when no draft answered), let the verifier answer from all passages: "
            "the standard RAG path, as a node of this graph. Off: accept the best draft whatever its confidence "
            "(the paper's Speculative RAG)."
        ),
    )
    retry_on: Literal["no_answer", "low_confidence"] = Field(
        default="no_answer",
        description=(
            "When to rewrite the query and retrieve again (while max_rounds allows): 'no_answer' only when every "
            "draft abstained (the passages lack the answer); 'low_confidence' also below accept_confidence. "
            "Otherwise low confidence goes straight to the fallback."
        ),
    )
    confidence_model: str = Field(
        default="",
        description=(
            "Path of a confidence model file (specrag confidence fit); empty: the bundled one; 'none': no "
            "confidence (the best draft is accepted, as in the paper; what a calibration run records)."
        ),
    )
    rewrite_max_tokens: int = Field(default=32, ge=4, le=128, description="Maximum tokens of a rewritten query.")
    condense_max_tokens: int = Field(
        default=64,
        ge=8,
        le=256,
        description="Maximum tokens of a follow-up rewritten into a standalone question (chat threads).",
    )
