"""The ``LanguageModel`` contract, run by every implementation (see conftest.py for which and how)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.llm.protocol import (
    BackendUnavailableError,
    ChatPrompt,
    LanguageModel,
    Message,
    NotSupportedError,
    ScoreRequest,
)
from tests.contract import servers
from tests.contract.cases import LLM_CASES, LLMCase, make_llm_case

PROMPT = ChatPrompt(
    messages=(Message(role="user", content="What is the capital of France? Answer in one word."),),
    prefill="Rationale:",
)
FOLLOWUP = (Message(role="user", content="Is the answer correct? (Yes or No)"),)


@pytest.fixture(scope="module")
def ollama_wire() -> Iterator[str]:
    """A fake Ollama replaying the documented responses."""
    with servers.serve(servers.ollama_routes) as url:
        yield url


@pytest.fixture(scope="module")
def vllm_wire() -> Iterator[str]:
    """A fake vLLM answering in the documented shapes."""
    with servers.serve(servers.vllm_routes) as url:
        yield url


@pytest.fixture(scope="module", params=LLM_CASES)
def llm_case(
    request: pytest.FixtureRequest, packaged_model: Callable[[str], Path], ollama_wire: str, vllm_wire: str
) -> Iterator[LLMCase]:
    """Each language model implementation in turn."""
    case = make_llm_case(request.param, packaged_model=packaged_model, ollama_url=ollama_wire, vllm_url=vllm_wire)
    yield case
    case.model.close()


def test_is_a_language_model(llm_case: LLMCase) -> None:
    assert isinstance(llm_case.llm, LanguageModel)
    assert llm_case.llm.name
    assert llm_case.llm.context_window > 0


def test_generate_returns_text_and_per_token_logprobs(llm_case: LLMCase) -> None:
    caps = llm_case.llm.capabilities
    assert caps.generate_logprobs, "every backend must give generation log-probabilities (ρ_draft)"
    (gen,) = llm_case.llm.generate([PROMPT], max_tokens=12)
    assert isinstance(gen.text, str) and gen.text
    assert 1 <= gen.n_tokens == len(gen.token_logprobs)
    assert all(math.isfinite(lp) and lp <= 0 for lp in gen.token_logprobs)
    assert gen.logprob == pytest.approx(sum(gen.token_logprobs))
    assert gen.finish_reason in ("stop", "length")
    if gen.finish_reason == "length" and not llm_case.wire:
        assert gen.n_tokens == 12


def test_generate_several_prompts_keeps_order(llm_case: LLMCase) -> None:
    """Each reply is its own prompt's: prompts that get different replies alone get the same replies, in order,
    together (a reversal or any other mix-up fails); a repeated prompt gets the same reply in the same batch."""
    prompts = [
        PROMPT,
        ChatPrompt(messages=(Message(role="user", content="Name a colour."),)),
        ChatPrompt(messages=(Message(role="user", content="Count from one to five."),)),
        ChatPrompt(messages=(Message(role="user", content="Which animal says moo?"),)),
    ]
    alone = [llm_case.llm.generate([p], max_tokens=6)[0].text for p in prompts]
    assert len(set(alone)) == len(prompts), f"the prompts must get different replies: {alone}"
    gens = llm_case.llm.generate([*prompts, PROMPT], max_tokens=6)
    assert [g.text for g in gens] == [*alone, alone[0]]
    assert gens[0].token_logprobs == pytest.approx(gens[-1].token_logprobs, abs=1e-4)


def test_score_is_genuine_or_refused(llm_case: LLMCase) -> None:
    model = llm_case.llm
    request = ScoreRequest(
        prompt=PROMPT, continuation=" Paris is the capital. Answer: Paris", followup=FOLLOWUP, candidates=("Yes", "No")
    )
    if not model.capabilities.score_continuation:
        with pytest.raises(NotSupportedError, match="teacher-forced"):
            model.score([request])
        return
    (res,) = model.score([request])
    assert res.n_tokens >= 3
    assert math.isfinite(res.logprob) and res.logprob < 0
    assert set(res.candidate_logprobs) == {"Yes", "No"}
    assert all(math.isfinite(v) and v <= 0 for v in res.candidate_logprobs.values())
    assert math.log(sum(math.exp(v) for v in res.candidate_logprobs.values())) <= 1e-6
    (again,) = model.score([request])
    assert again.logprob == pytest.approx(res.logprob, abs=1e-3)
    (longer,) = model.score([ScoreRequest(prompt=PROMPT, continuation=" Paris is the capital. Answer: Paris, France")])
    assert longer.n_tokens > res.n_tokens
    assert longer.logprob < res.logprob


def test_next_token_candidates(llm_case: LLMCase) -> None:
    model = llm_case.llm
    caps = model.capabilities
    prompt = ChatPrompt(messages=(*PROMPT.messages, Message(role="assistant", content="Paris"), *FOLLOWUP))
    if not caps.next_token_logprobs:
        with pytest.raises(NotSupportedError):
            model.next_token_logprobs(prompt, ["Yes", "No"])
        return
    out = model.next_token_logprobs(prompt, ["Yes", "No"])
    assert set(out) == {"Yes", "No"}
    assert all(v <= 0 for v in out.values())
    if caps.exact_candidates:
        assert all(math.isfinite(v) for v in out.values())
    else:  # read from a top-k list: -inf (a lower bound) outside it, never a made-up number
        assert all(math.isfinite(v) or v == -math.inf for v in out.values())
    if llm_case.wire and not caps.exact_candidates:
        assert out["Yes"] == pytest.approx(-0.1625) and out["No"] == pytest.approx(-1.9614)


def test_provenance_says_how_or_refuses(llm_case: LLMCase) -> None:
    model = llm_case.llm
    caps = model.capabilities
    assert model.provenance("generate")
    for kind, able in (("score", caps.score_continuation), ("candidates", caps.next_token_logprobs)):
        if able:
            assert model.provenance(kind)  # type: ignore[arg-type]
        else:
            with pytest.raises(NotSupportedError):
                model.provenance(kind)  # type: ignore[arg-type]
    if not caps.exact_candidates:
        assert "lower bound" in model.provenance("candidates")


# ---------------------------------------------------------------- server failures (server backends only)


def _server_model(kind: str, url: str, *, model: str = servers.KNOWN_MODEL, timeout_s: float = 5) -> LanguageModel:
    if kind == "ollama":
        from app.llm.ollama import OllamaModel

        return OllamaModel(model, base_url=url, timeout_s=timeout_s)
    from app.llm.openai_compat import OpenAICompatModel

    return OpenAICompatModel(model, base_url=f"{url}/v1", timeout_s=timeout_s)


SERVER_KINDS = ["ollama", "openai"]


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_refused_connection_is_a_clear_error(kind: str) -> None:
    url = servers.refusing_url()
    model = _server_model(kind, url, timeout_s=2)
    start = time.monotonic()
    with pytest.raises(BackendUnavailableError, match="cannot connect") as info:
        model.generate([PROMPT], max_tokens=4)
    assert url.split("//")[1] in str(info.value)
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_hanging_server_times_out_within_timeout(kind: str) -> None:
    hang = servers.HangingServer()
    try:
        model = _server_model(kind, hang.url, timeout_s=0.3)
        start = time.monotonic()
        with pytest.raises(BackendUnavailableError, match=r"did not answer within 0\.3 s"):
            model.generate([PROMPT], max_tokens=4)
        assert time.monotonic() - start < 2
    finally:
        hang.close()


@pytest.mark.parametrize(
    ("kind", "routes"), [("ollama", servers.ollama_routes), ("openai", servers.vllm_routes)], ids=SERVER_KINDS
)
def test_unknown_model_is_a_clear_error(kind: str, routes: Callable[..., tuple[int, dict[str, object]]]) -> None:
    with servers.serve(routes) as url:
        model = _server_model(kind, url, model="no-such-model")
        with pytest.raises(BackendUnavailableError, match="does not serve model 'no-such-model'"):
            model.generate([PROMPT], max_tokens=4)
