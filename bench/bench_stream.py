"""Streaming latency of the chat endpoint: time to the first streamed event, to the first node event and to the
first answer token, against the whole run, with the official ``openai`` client on the embedded default models.

    .venv/bin/python bench/bench_stream.py [--store DIR] [--questions 3] [--model speculative-rag] [--max-rounds N]

Without --store, ``samples/corpus`` is ingested into a temporary store first. Starts ``specrag serve`` on a free
loopback port (default drafter and verifier), asks each question once with ``stream=True`` on a new thread (one
warm-up question first, not counted, so model loading is not measured) and prints per question and as medians:
first chunk (``run_start``), first ``node_end``, first content delta (the first answer token), and the end of the
stream, in seconds from sending the request. The headline is first answer token / end of the stream: what a user
waits for before reading the answer, as a share of the run. First chunk / end is printed beside it, but the first
chunk is a metadata event (``run_start``), not part of the answer. Runs use the product's ``max_rounds`` unless
--max-rounds is given.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI

from graphs.context import Context

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = (
    "Who deciphered the Egyptian hieroglyphs?",
    "Where was the Rosetta Stone found?",
    "In which year did Champollion announce his decipherment?",
    "What kind of stone is the Rosetta Stone made of?",
    "Which French commander surrendered at Alexandria in 1801?",
)


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(store: Path, root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``specrag serve`` on a free port, ready; returns the process and the base URL."""
    port = free_port()
    env = {
        **os.environ,
        "SPECRAG_CHECKPOINTER__PATH": str(root / "checkpoints.sqlite"),
        "SPECRAG_TRACES__PATH": str(root / "traces.sqlite"),
    }
    log = (root / "server.log").open("wb")
    cmd = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--store", str(store)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"specrag serve exited with {proc.returncode}; see {root / 'server.log'}")
        try:
            if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.terminate()
    sys.exit(f"specrag serve did not start within 180 s; see {root / 'server.log'}")


def stream_once(client: OpenAI, model: str, question: str, max_rounds: int) -> dict[str, float]:
    """Seconds from the request to the first chunk, first node end, first content, and the end of the stream."""
    marks: dict[str, float] = {}
    t0 = time.perf_counter()
    stream = client.chat.completions.create(
        model=model,
        stream=True,
        messages=[{"role": "user", "content": question}],
        extra_body={"context": {"max_rounds": max_rounds}},
    )
    for chunk in stream:
        now = time.perf_counter() - t0
        marks.setdefault("first_chunk", now)
        ext: dict[str, Any] = (chunk.model_extra or {}).get("specrag") or {}
        if ext.get("event") == "node_end":
            marks.setdefault("first_node_end", now)
        if chunk.choices and chunk.choices[0].delta.content:
            marks.setdefault("first_content", now)
    marks["end"] = time.perf_counter() - t0
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="an ingested store (default: ingest samples/corpus)")
    parser.add_argument("--questions", type=int, default=3, help=f"questions measured (1-{len(QUESTIONS) - 1})")
    parser.add_argument("--model", default="speculative-rag", choices=["speculative-rag", "standard-rag"])
    parser.add_argument(
        "--max-rounds", type=int, default=Context().max_rounds, help="retrieval rounds (default: the product's)"
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="specrag-bench-stream-"))
    store = args.store
    if store is None:
        store = root / "store"
        cmd = [sys.executable, "-m", "app.cli", "ingest", str(REPO / "samples" / "corpus"), "--store", str(store)]
        subprocess.run([*cmd, "--quiet"], cwd=REPO, check=True)
    proc, base = serve(store, root)
    try:
        client = OpenAI(base_url=base, api_key="unused", timeout=900)
        stream_once(client, args.model, QUESTIONS[0], args.max_rounds)  # warm-up: loads the models
        rows = [stream_once(client, args.model, q, args.max_rounds) for q in QUESTIONS[1 : 1 + args.questions]]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    keys = ("first_chunk", "first_node_end", "first_content", "end")
    print(f"{args.model}, max_rounds={args.max_rounds}, {len(rows)} questions, seconds from sending the request:")
    print("| question | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for q, r in zip(QUESTIONS[1:], rows, strict=False):
        print(f"| {q} | " + " | ".join(f"{r.get(k, float('nan')):.3f}" for k in keys) + " |")
    med = {k: statistics.median(r.get(k, float("nan")) for r in rows) for k in keys}
    print("| median | " + " | ".join(f"{med[k]:.3f}" for k in keys) + " |")
    answered = sum("first_content" in r for r in rows)
    print(
        f"first answer token / end of stream (medians): {med['first_content'] / med['end']:.3f} "
        f"({answered}/{len(rows)} streams had answer content)"
    )
    print(f"first chunk (run_start, metadata) / end of stream (medians): {med['first_chunk'] / med['end']:.4f}")


if __name__ == "__main__":
    main()
