"""``POST /v1/chat/completions`` (JSON or server-sent events) and ``GET /v1/models``.

The answer's text carries its sources (a "Sources:" line); the completion object and the last stream chunk carry
the extension field ``specrag``: ``run_id``, ``thread_id``, ``original_question``, ``question`` (standalone),
``answer``, ``rationale``, ``sources``, ``drafts`` (with scores), ``chosen``, ``rounds``, ``timings``, ``trace``
(the trace's URL path). While a streamed run is going, chunks with an empty ``delta`` report progress in
``specrag``: ``{"event": "node_start" | "node_end", "node", "round"}``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask

from app.server.errors import APIError, error_body, run_error
from app.server.runner import ChatRun, ChatRunner, Lease
from app.server.schemas import MODELS, THREAD_ID, ChatCompletionRequest, ModelCard, ModelList
from app.server.security import require_api_key
from app.trace.capture import round_of
from app.trace.model import RunTrace
from graphs.context import Context
from graphs.result import RunResult
from graphs.state import ChatTurn

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["chat"])

_CREATED = int(time.time())


def runner_of(request: Request) -> ChatRunner:
    """The application's :class:`ChatRunner` (set by the lifespan)."""
    runner: ChatRunner | None = getattr(request.app.state, "runner", None)
    if runner is None:
        raise APIError(503, "the server is starting", code="not_ready")
    return runner


@router.get("/models", response_model=ModelList)
async def list_models() -> ModelList:
    """The graphs this server answers with, as OpenAI model ids."""
    return ModelList(data=[ModelCard(id=name, created=_CREATED) for name in MODELS])


def _context(overrides: Mapping[str, Any] | None) -> Context:
    if not overrides:
        return Context()
    if "store" in overrides:
        raise APIError(
            400, "context.store cannot be set through the API (the server's store is used)", param="context.store"
        )
    try:
        return Context.model_validate(dict(overrides))
    except ValidationError as exc:
        first = exc.errors()[0]
        param = "context." + ".".join(str(p) for p in first["loc"])
        raise APIError(400, f"invalid {param}: {first['msg']}", param=param, code="invalid_context") from None


def _thread_id(body: ChatCompletionRequest, header: str | None) -> str:
    thread_id = body.thread_id or header or uuid.uuid4().hex
    if not THREAD_ID.fullmatch(thread_id):
        raise APIError(400, "invalid thread_id: use 1-128 letters, digits, '_', '.', ':' or '-'", param="thread_id")
    return thread_id


def _turns(body: ChatCompletionRequest) -> list[ChatTurn]:
    last = body.messages[-1]
    if last.role != "user":
        raise APIError(400, f"the last message must be from the user, not {last.role!r}", param="messages")
    if not last.text().strip():
        raise APIError(400, "the last user message is empty", param="messages", code="empty_content")
    return [ChatTurn(role=m.role, content=m.text()) for m in body.messages if m.role in ("user", "assistant")]


def answer_text(result: RunResult) -> str:
    """The assistant's message: the answer (else the rationale), then a line naming its sources."""
    text = result.answer.strip() or result.rationale.strip() or "No answer was found in the documents."
    if result.sources:
        text += "\n\nSources: " + "; ".join(f"[{i}] {s.title or s.doc_id}" for i, s in enumerate(result.sources, 1))
    return text


def extension(trace: RunTrace, run: ChatRun) -> dict[str, Any]:
    """The ``specrag`` extension object of a finished run."""
    assert trace.result is not None
    return {
        **trace.result.model_dump(mode="json"),
        "run_id": trace.run_id,
        "thread_id": run.thread_id,
        "original_question": run.question,
        "trace": f"/v1/traces/{trace.run_id}",
    }


def _completion(trace: RunTrace, run: ChatRun) -> dict[str, Any]:
    assert trace.result is not None
    return {
        "id": f"chatcmpl-{trace.run_id}",
        "object": "chat.completion",
        "created": run.created,
        "model": run.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer_text(trace.result)},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "specrag": extension(trace, run),
    }


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    x_thread_id: str | None = Header(default=None),
) -> JSONResponse | StreamingResponse:
    """Answer the conversation's last user message with the graph the model id names (see the module docs)."""
    graph = MODELS.get(body.model)
    if graph is None:
        raise APIError(
            404,
            f"the model {body.model!r} does not exist: use one of {', '.join(MODELS)}",
            param="model",
            code="model_not_found",
        )
    turns = _turns(body)
    context = _context(body.context)
    thread_id = _thread_id(body, x_thread_id)
    runner = runner_of(request)
    stack = AsyncExitStack()
    lease = await stack.enter_async_context(runner.lease(thread_id))
    try:
        run = await runner.prepare(
            model=body.model, graph=graph, thread_id=thread_id, request_turns=turns, context=context
        )
    except BaseException as exc:
        await stack.aclose()
        if isinstance(exc, Exception):
            raise run_error(exc) from None
        raise
    headers = {"X-Thread-Id": thread_id, "X-Run-Id": run.run_id}
    if body.stream:
        return StreamingResponse(
            _sse(runner, run, lease, stack),
            media_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            background=BackgroundTask(stack.aclose),  # releases the lease if the stream never started
        )
    async with stack:
        try:
            trace = await runner.execute(run, lease=lease)
        except Exception as exc:
            raise run_error(exc) from None
    return JSONResponse(_completion(trace, run), headers=headers)


def _chunk(run: ChatRun, delta: dict[str, Any], *, finish: str | None = None, ext: Any = None) -> str:
    payload: dict[str, Any] = {
        "id": f"chatcmpl-{run.run_id}",
        "object": "chat.completion.chunk",
        "created": run.created,
        "model": run.model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if ext is not None:
        payload["specrag"] = ext
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _pieces(text: str, size: int) -> list[str]:
    """``text`` in pieces of about ``size`` characters, cut after whitespace (joined, they give ``text``)."""
    out: list[str] = []
    current = ""
    for word in text.split(" "):
        current += word if not current else " " + word
        if len(current) >= size:
            out.append(current + " ")
            current = ""
    if current:
        out.append(current)
    elif out:
        out[-1] = out[-1][:-1]
    return out or [""]


class _Progress:
    """Turns LangGraph "tasks" events into progress objects on a queue (node start/end, with the round)."""

    def __init__(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self.queue = queue
        self.open: dict[str, tuple[str, int, float]] = {}

    def __call__(self, mode: str, payload: Any) -> None:
        if mode != "tasks" or not isinstance(payload, Mapping):
            return
        task_id, node = str(payload.get("id", "")), str(payload.get("name", "?"))
        if "result" in payload or "error" in payload:
            name, round_, t0 = self.open.pop(task_id, (node, 0, time.perf_counter()))
            event: dict[str, Any] = {"event": "node_end", "node": name, "round": round_}
            event["seconds"] = round(time.perf_counter() - t0, 4)
            if payload.get("error") is not None:
                event["error"] = " ".join(str(payload["error"]).split())
            self.queue.put_nowait(event)
        else:
            round_ = round_of(payload.get("input"))
            self.open[task_id] = (node, round_, time.perf_counter())
            self.queue.put_nowait({"event": "node_start", "node": node, "round": round_})


async def _sse(runner: ChatRunner, run: ChatRun, lease: Lease, stack: AsyncExitStack) -> AsyncIterator[str]:
    """The stream: role, progress chunks, the answer in pieces, the final chunk with ``specrag``, ``[DONE]``."""
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def drive() -> RunTrace:
        try:
            return await runner.execute(run, _Progress(queue), lease=lease)
        finally:
            queue.put_nowait(None)

    async with stack:  # the lease ends with the run (its slot: once the run's backend calls have returned)
        task = asyncio.create_task(drive())
        try:
            yield _chunk(
                run,
                {"role": "assistant", "content": ""},
                ext={"event": "run_start", "run_id": run.run_id, "thread_id": run.thread_id},
            )
            while (event := await queue.get()) is not None:
                yield _chunk(run, {}, ext=event)
            try:
                trace = await task
            except Exception as exc:
                error = run_error(exc)
                body = error_body(error.status, error.message, param=error.param, code=error.code)
                yield f"data: {json.dumps(body)}\n\n"
                return
        finally:
            if not task.done():  # the client went away: stop the run before its lease ends
                task.cancel()
    assert trace.result is not None
    for piece in _pieces(answer_text(trace.result), runner.stream_chunk_chars):
        yield _chunk(run, {"content": piece})
    yield _chunk(run, {}, finish="stop", ext=extension(trace, run))
    yield "data: [DONE]\n\n"
