"""Wire-level fakes: real HTTP servers on 127.0.0.1 that answer with the documented JSON (fixtures/*.json).

* ``ollama_routes``: ``/api/chat`` (the 1-token fixture when ``options.num_predict`` is 1, else the chat fixture
  with one more token that names the prompt, ``prompt_tag``, so different prompts get different replies),
  ``/api/embed`` (the documented response, its vector replaced per input by one computed from the text,
  ``toy_embedding``: the same text always gets the same vector, different texts different ones), 404 with the
  documented error body for an unknown model.
* ``vllm_routes``: ``/v1/chat/completions`` (the generation fixture, with the same prompt tag; with
  ``prompt_logprobs`` a response in the documented ``prompt_logprobs`` shape computed for a toy tokenizer) and
  ``/tokenize`` (same toy tokenizer), so span bookkeeping is exercised end to end over real sockets.
* ``refusing_url`` (nothing listens) and ``HangingServer`` (accepts, never answers) for the error contract.
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
import socket
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"
KNOWN_MODEL = "gemma3"
Route = Callable[[str, dict[str, Any]], tuple[int, dict[str, Any]]]


def fixture(name: str) -> dict[str, Any]:
    """A fixture file (``source`` cites the documentation it follows)."""
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    assert data.get("source"), f"fixture {name} must cite its source"
    return data


@contextmanager
def serve(route: Route) -> Iterator[str]:
    """Run ``route`` behind a real HTTP server on a free port; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            status, payload = route(self.path, body)
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            self.do_POST()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def prompt_tag(messages: list[dict[str, Any]]) -> str:
    """A token naming a conversation (from its messages): the fakes append it to the fixture's reply, so a
    client that mixed up the replies of several prompts is caught."""
    return f" #{zlib.crc32(json.dumps(messages, sort_keys=True).encode()) % 10_000:04d}"


def _byte_list(token: str) -> list[int]:
    return list(token.encode())


def toy_embedding(text: str, dim: int) -> list[float]:
    """A unit vector computed from ``text`` (seeded by its CRC-32): the same text always gets the same vector."""
    rng = random.Random(zlib.crc32(text.encode()))
    vector = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector]


def ollama_routes(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Replays the Ollama fixtures (the chat reply tagged with its prompt; embeddings per text)."""
    if body.get("model") not in (KNOWN_MODEL, "embeddinggemma"):
        err = fixture("ollama_error_404")
        return int(err["status"]), err["response"]
    if path == "/api/chat":
        if (body.get("options") or {}).get("num_predict") == 1:
            return 200, fixture("ollama_chat_next_token")["response"]
        resp = copy.deepcopy(fixture("ollama_chat")["response"])
        tag = prompt_tag(body["messages"])
        resp["message"]["content"] += tag
        resp["logprobs"].append({"token": tag, "logprob": toy_logprob(tag), "bytes": _byte_list(tag)})
        resp["eval_count"] = len(resp["logprobs"])
        return 200, resp
    if path == "/api/embed":
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        resp = copy.deepcopy(fixture("ollama_embed")["response"])
        dim = len(resp["embeddings"][0])
        resp["embeddings"] = [toy_embedding(text, dim) for text in inputs]
        return 200, resp
    return 404, {"error": f"unknown path {path}"}


# ---------------------------------------------------------------- toy vLLM

_SPECIAL = re.compile(r"<\|[a-z_]+\|>")


def toy_render(body: dict[str, Any]) -> str:
    """A ChatML-like template with vLLM's add_generation_prompt / continue_final_message semantics."""
    messages = body["messages"]
    cont = bool(body.get("continue_final_message"))
    out = ""
    for i, m in enumerate(messages):
        last = i == len(messages) - 1
        out += f"<|im_start|>{m['role']}\n{m['content']}"
        if not (last and cont):
            out += "<|im_end|>\n"
    if body.get("add_generation_prompt", True) and not cont:
        out += "<|im_start|>assistant\n"
    return out


def toy_tokens(text: str) -> list[str]:
    """Special markers, words with their leading spaces, newlines."""
    return re.findall(r"<\|[a-z_]+\|>|\n| ?[^\s<]+| +|<", text)


def toy_id(tok: str) -> int:
    return zlib.crc32(tok.encode()) % 150_000


def toy_logprob(tok: str) -> float:
    """A deterministic value in [-4, -0.01]."""
    return -0.01 - (zlib.crc32(tok.encode()) % 400) / 100.0


def vllm_routes(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Fixture generation; prompt_logprobs and /tokenize computed for the toy tokenizer in the documented shapes."""
    if body.get("model") != KNOWN_MODEL:
        return 404, {"object": "error", "message": f"The model `{body.get('model')}` does not exist.", "code": 404}
    toks = toy_tokens(toy_render(body)) if "messages" in body else []
    if path == "/tokenize":
        shape = fixture("vllm_tokenize")["response"]
        return 200, {**shape, "count": len(toks), "tokens": [toy_id(t) for t in toks]}
    if path == "/v1/chat/completions":
        if body.get("prompt_logprobs") is None:
            resp = copy.deepcopy(fixture("openai_chat")["response"])
            tag = prompt_tag(body["messages"])
            choice = resp["choices"][0]
            choice["message"]["content"] += tag
            choice["logprobs"]["content"].append(
                {"token": tag, "logprob": toy_logprob(tag), "bytes": _byte_list(tag), "top_logprobs": []}
            )
            resp["usage"]["completion_tokens"] = len(choice["logprobs"]["content"])
            resp["usage"]["total_tokens"] = resp["usage"]["prompt_tokens"] + resp["usage"]["completion_tokens"]
            return 200, resp
        resp = copy.deepcopy(fixture("vllm_prompt_logprobs")["response"])
        resp["prompt_logprobs"] = [None] + [
            {str(toy_id(t)): {"logprob": toy_logprob(t), "rank": 1, "decoded_token": t}} for t in toks[1:]
        ]
        resp["usage"] = {"prompt_tokens": len(toks), "total_tokens": len(toks) + 1, "completion_tokens": 1}
        return 200, resp
    return 404, {"object": "error", "message": f"unknown path {path}", "code": 404}


# ---------------------------------------------------------------- failures


def refusing_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class HangingServer:
    """Accepts connections and never answers (until closed)."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self._conns.append(conn)

    def close(self) -> None:
        """Stop accepting and drop every connection."""
        self._stop.set()
        self._thread.join(timeout=2)
        for c in self._conns:
            c.close()
        self._sock.close()
