"""Load test of the chat endpoint: concurrent chat clients for a fixed time against a real ``specrag serve``.

``make reliability`` runs it at full size (32 clients, 3 minutes, SmolLM2-135M as drafter and verifier on the
embedded defaults: LanceDB, SQLite checkpoints and traces)::

    python -m tests.reliability.load --clients 32 --duration 180 --out test-artifacts/reliability/load.json

It starts its own server on a free loopback port (data under a temporary directory; ``--base-url`` targets a
running one instead, loopback only) and runs ``--clients`` clients, each in a loop until ``--duration`` has passed:
half of them stream; every second request of a client is a follow-up in the thread of its previous answer; every
request sends ``--context`` (default: one retrieval round, drafts of at most 64 tokens). A 429 is honoured: the
client waits ``Retry-After`` (times 1-1.5, to spread the retries) and sends again. The server keeps its default
limits (one run at a time, 8 queued, 600 s queue and run timeouts). One warm-up request runs first (the first run
loads the models) and is not counted.

Reported: throughput (completed answers per second), latency p50/p95/max of completed answers (end to end,
queueing included) and of 429s, and the count of every status (and error code). The run fails (exit 1) when a
request hangs past its timeout (``queue_timeout_s + run_timeout_s`` + 30 s), a 5xx other than the documented ones
(503 ``server_busy``, 504 ``run_timeout``) or a transport error occurs, a 429 takes longer than 2 s, no answer
completes, the server is not answering at the end, or an answered run has no trace.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.reliability.harness import FAST_MODEL, SpecragServer, ingest_samples, server_env

QUESTIONS = [
    "Who deciphered the Egyptian hieroglyphs?",
    "Where was the Rosetta Stone found?",
    "What languages are written on the Rosetta Stone?",
    "When did the British acquire the Rosetta Stone?",
    "What did Thomas Young contribute to the decipherment?",
    "What is the Memphis Decree?",
    "Where is the Rosetta Stone displayed today?",
    "In which year did Champollion announce his decipherment?",
]
FOLLOW_UPS = ["And when was that?", "Why does it matter?", "Who else was involved?"]
DOCUMENTED_5XX = {(503, "server_busy"), (504, "run_timeout")}
MAX_429_S = 2.0
CONTEXT = {"max_rounds": 1, "draft_max_tokens": 64}
"""Per-run knobs the clients send: one retrieval round, short drafts (the other knobs are the defaults)."""


@dataclass
class Outcome:
    """One request: what came back and how long it took."""

    client: int
    stream: bool
    follow_up: bool
    status: int | None
    """HTTP status; ``None`` when the request failed in transport or timed out on the client."""
    code: str | None
    """The error code (OpenAI-style body, or the stream's error event), if any."""
    seconds: float
    run_id: str | None = None
    thread_id: str | None = None
    run_seconds: float | None = None
    retry_after: int | None = None
    transport_error: str | None = None
    timed_out: bool = False
    ended: float = 0.0
    """``time.monotonic()`` when the outcome was known."""

    @property
    def label(self) -> str:
        if self.timed_out:
            return "hung (client timeout)"
        if self.status is None:
            return "transport error"
        if self.status == 200 and self.code:
            return f"200 stream error {self.code}"
        return f"{self.status}" + (f" {self.code}" if self.code and self.status != 200 else "")


def _error_code(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("code"))
    return None


async def one_request(
    http: httpx.AsyncClient, client: int, body: dict[str, Any], *, stream: bool, timeout_s: float
) -> Outcome:
    """Send one chat completion and classify what came back."""
    t0 = time.monotonic()
    out = Outcome(client, stream, "thread_id" in body, None, None, 0.0)
    try:
        async with asyncio.timeout(timeout_s):
            if stream:
                async with http.stream("POST", "/chat/completions", json={**body, "stream": True}) as r:
                    out.status = r.status_code
                    if r.status_code != 200:
                        payload = json.loads(await r.aread())
                        out.code = _error_code(payload)
                    else:
                        async for line in r.aiter_lines():
                            if not line.startswith("data: ") or line == "data: [DONE]":
                                continue
                            event = json.loads(line[len("data: ") :])
                            if "error" in event:
                                out.code = _error_code(event)
                            ext = event.get("specrag") or {}
                            if "answer" in ext:
                                out.run_id, out.thread_id = ext["run_id"], ext["thread_id"]
                                out.run_seconds = ext.get("seconds")
                        if out.run_id is None and out.code is None:
                            out.code = "incomplete_stream"  # ended with neither the answer nor an error event
                    retry = r.headers.get("retry-after")
            else:
                r = await http.post("/chat/completions", json=body)
                out.status = r.status_code
                payload = r.json()
                out.code = _error_code(payload)
                if r.status_code == 200:
                    ext = payload["specrag"]
                    out.run_id, out.thread_id, out.run_seconds = ext["run_id"], ext["thread_id"], ext.get("seconds")
                retry = r.headers.get("retry-after")
            out.retry_after = int(retry) if retry else None
    except TimeoutError:
        out.timed_out = True
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        out.transport_error = f"{type(exc).__name__}: {exc}"
    out.seconds = time.monotonic() - t0
    out.ended = time.monotonic()
    return out


async def run_clients(
    base_url: str,
    *,
    clients: int,
    duration_s: float,
    request_timeout_s: float,
    context: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    seed: int = 0,
) -> tuple[list[Outcome], float]:
    """Run the clients until ``duration_s`` has passed (requests in flight then finish); the outcomes and the wall
    time from the first request to the last outcome."""
    rng = random.Random(seed)
    outcomes: list[Outcome] = []
    start = time.monotonic()
    deadline = start + duration_s
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)

    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=None, limits=limits) as http:

        async def client(i: int) -> None:
            thread: str | None = None
            n = 0
            while time.monotonic() < deadline:
                question = QUESTIONS[(i + n) % len(QUESTIONS)]
                body: dict[str, Any] = {"model": "speculative-rag"}
                if thread is not None:
                    body["thread_id"] = thread
                    question = FOLLOW_UPS[(i + n) % len(FOLLOW_UPS)]
                body["messages"] = [{"role": "user", "content": question}]
                if context:
                    body["context"] = context
                out = await one_request(http, i, body, stream=i % 2 == 1, timeout_s=request_timeout_s)
                outcomes.append(out)
                if out.status == 429:
                    wait = min(out.retry_after or 1, 60) * rng.uniform(1.0, 1.5)
                    await asyncio.sleep(min(wait, max(0.0, deadline - time.monotonic())))
                    continue
                n += 1
                thread = out.thread_id if (out.thread_id and thread is None) else None
                if out.status is None or out.status >= 500:
                    await asyncio.sleep(1.0)

        await asyncio.gather(*(client(i) for i in range(clients)))
    return outcomes, max((o.ended for o in outcomes), default=start) - start


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of ``values``, ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summarize(outcomes: list[Outcome], wall_s: float) -> dict[str, Any]:
    """Throughput, latencies and status counts."""
    done = [o for o in outcomes if o.status == 200 and not o.code and o.run_id]
    refused = [o for o in outcomes if o.status == 429]
    lat = [o.seconds for o in done]
    run = [o.run_seconds for o in done if o.run_seconds is not None]
    rnd = lambda x: None if x is None else round(x, 3)  # noqa: E731
    return {
        "requests": len(outcomes),
        "completed": len(done),
        "wall_s": round(wall_s, 1),
        "throughput_per_s": round(len(done) / wall_s, 4) if wall_s else 0.0,
        "throughput_per_min": round(60 * len(done) / wall_s, 2) if wall_s else 0.0,
        "latency_s": {
            "p50": rnd(percentile(lat, 0.5)),
            "p95": rnd(percentile(lat, 0.95)),
            "max": rnd(max(lat, default=None)),
        },
        "run_s": {"p50": rnd(percentile(run, 0.5)), "p95": rnd(percentile(run, 0.95))},
        "latency_429_s": {
            "p50": rnd(percentile([o.seconds for o in refused], 0.5)),
            "max": rnd(max((o.seconds for o in refused), default=None)),
        },
        "retry_after_s": sorted(Counter(o.retry_after for o in refused if o.retry_after is not None).items()),
        "statuses": dict(sorted(Counter(o.label for o in outcomes).items())),
        "streamed_completed": sum(o.stream for o in done),
        "follow_ups_completed": sum(o.follow_up for o in done),
    }


def problems(outcomes: list[Outcome], summary: dict[str, Any]) -> list[str]:
    """What the run violated (empty when it held)."""
    out = []
    hung = [o for o in outcomes if o.timed_out]
    if hung:
        out.append(f"{len(hung)} request(s) hung past their timeout")
    broken = [o.transport_error for o in outcomes if o.transport_error]
    if broken:
        out.append(f"{len(broken)} transport error(s), e.g. {broken[0]}")
    bad = [o for o in outcomes if o.status is not None and o.status >= 500 and (o.status, o.code) not in DOCUMENTED_5XX]
    bad += [o for o in outcomes if o.status == 200 and o.code and (504, o.code) not in DOCUMENTED_5XX]
    if bad:
        out.append(f"{len(bad)} undocumented server error(s): {sorted({o.label for o in bad})}")
    slow = [o for o in outcomes if o.status == 429 and o.seconds > MAX_429_S]
    if slow:
        out.append(f"{len(slow)} 429(s) took longer than {MAX_429_S} s (max {max(o.seconds for o in slow):.2f} s)")
    if not summary["completed"]:
        out.append("no request completed")
    return out


async def verify_kept(base_url: str, outcomes: list[Outcome], headers: dict[str, str] | None = None) -> list[str]:
    """Every answered run has its trace (status ok, same thread), and the server still answers."""
    out = []
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as http:
        if (await http.get("/models")).status_code != 200:
            out.append("the server does not answer GET /v1/models after the load")
        for o in outcomes:
            if o.status == 200 and not o.code and o.run_id:
                r = await http.get(f"/traces/{o.run_id}")
                if r.status_code != 200 or r.json().get("status") != "ok" or r.json().get("thread_id") != o.thread_id:
                    out.append(f"run {o.run_id} was answered but its trace is {r.status_code} {r.text[:200]}")
    return out


async def warm_up(base_url: str, context: dict[str, Any], timeout_s: float) -> Outcome:
    """One request before the clock starts: the first run loads the models (a cold start is not steady state)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=None) as http:
        body = {"model": "speculative-rag", "messages": [{"role": "user", "content": QUESTIONS[0]}], "context": context}
        out = await one_request(http, -1, body, stream=False, timeout_s=timeout_s)
    if out.status != 200:
        raise RuntimeError(f"the warm-up request failed: {out.label} {out.transport_error or ''}")
    return out


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """The figures as a Markdown table (for docs/reliability.md)."""
    lat, run, r429 = summary["latency_s"], summary["run_s"], summary["latency_429_s"]
    rows = [
        ("date (UTC)", meta["date"]),
        ("command", f"`{meta['command']}`"),
        ("clients, duration", f"{meta['clients']} clients, {meta['duration_s']:g} s of new requests"),
        ("server", meta["server"]),
        ("warm-up (first run, loads the models; not counted)", f"{summary['warm_up']['seconds']} s"),
        ("requests sent", summary["requests"]),
        (
            "answers completed",
            f"{summary['completed']} ({summary['streamed_completed']} streamed, "
            f"{summary['follow_ups_completed']} follow-ups)",
        ),
        ("throughput", f"{summary['throughput_per_min']} answers/min over {summary['wall_s']} s"),
        ("latency of answers (end to end)", f"p50 {lat['p50']} s, p95 {lat['p95']} s, max {lat['max']} s"),
        ("run time (server side)", f"p50 {run['p50']} s, p95 {run['p95']} s"),
        ("latency of 429s", f"p50 {r429['p50']} s, max {r429['max']} s"),
        ("Retry-After sent (s: count)", ", ".join(f"{s}: {n}" for s, n in summary["retry_after_s"]) or "-"),
        ("statuses", ", ".join(f"{k}: {v}" for k, v in summary["statuses"].items())),
        ("checks", "passed" if not meta["problems"] else "FAILED: " + "; ".join(meta["problems"])),
    ]
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=180.0, help="seconds during which new requests start")
    parser.add_argument("--model", default=FAST_MODEL, help="packaged model for drafter and verifier")
    parser.add_argument("--queue-timeout", type=float, default=600.0, help="SPECRAG_SERVER__QUEUE_TIMEOUT_S")
    parser.add_argument("--run-timeout", type=float, default=600.0, help="SPECRAG_SERVER__RUN_TIMEOUT_S")
    parser.add_argument(
        "--context", type=json.loads, default=dict(CONTEXT), help=f"per-run knobs (JSON; default {json.dumps(CONTEXT)})"
    )
    parser.add_argument("--base-url", help="a running server (loopback) instead of starting one")
    parser.add_argument("--out", type=Path, default=Path("test-artifacts/reliability/load.json"))
    args = parser.parse_args(argv)
    command = "python -m tests.reliability.load " + " ".join(argv if argv is not None else sys.argv[1:])
    timeout_s = args.queue_timeout + args.run_timeout + 30
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="specrag-load-") as tmp:
        server: SpecragServer | None = None
        if args.base_url:
            if httpx.URL(args.base_url).host not in ("127.0.0.1", "localhost", "::1"):
                parser.error("--base-url must be a loopback address")
            base_url, desc = args.base_url, f"running server at {args.base_url}"
        else:
            env = server_env(
                Path(tmp),
                model=args.model,
                SPECRAG_SERVER__QUEUE_TIMEOUT_S=str(args.queue_timeout),
                SPECRAG_SERVER__RUN_TIMEOUT_S=str(args.run_timeout),
            )
            print(f"ingesting samples/corpus into {tmp} ...", file=sys.stderr)
            ingest_samples(env)
            server = SpecragServer(env, args.out.with_suffix(".server.log"))
            base_url = server.base_url
            desc = (
                f"`specrag serve`, drafter = verifier = {args.model}, LanceDB + SQLite, max_concurrent_runs 1, "
                f"max_queued_runs 8 (defaults), queue/run timeouts {args.queue_timeout:g}/{args.run_timeout:g} s; "
                f"context {json.dumps(args.context)}"
            )
        try:
            print("warm-up: one request (loads the models; not counted) ...", file=sys.stderr)
            warm = asyncio.run(warm_up(base_url, args.context, timeout_s))
            print(f"{args.clients} clients for {args.duration:g} s against {base_url} ...", file=sys.stderr)
            outcomes, wall = asyncio.run(
                run_clients(
                    base_url,
                    clients=args.clients,
                    duration_s=args.duration,
                    request_timeout_s=timeout_s,
                    context=args.context,
                )
            )
            summary = summarize(outcomes, wall)
            summary["warm_up"] = {"status": warm.status, "seconds": round(warm.seconds, 1)}
            found = problems(outcomes, summary) + asyncio.run(verify_kept(base_url, outcomes))
            if server is not None and server.proc.poll() is not None:
                found.append(f"the server exited with {server.proc.returncode}")
        finally:
            if server is not None:
                server.stop()
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "command": command.strip(),
        "clients": args.clients,
        "duration_s": args.duration,
        "server": desc,
        "problems": found,
    }
    args.out.write_text(
        json.dumps({"meta": meta, "summary": summary, "outcomes": [asdict(o) for o in outcomes]}, indent=1)
    )
    print(markdown(summary, meta))
    print(f"details: {args.out}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
