"""A model backend that can be made to fail on command: an Ollama-shaped ``/api/chat`` on 127.0.0.1.

The server under test runs its drafter on it (``SPECRAG_DRAFTER__PROVIDER=ollama``) while everything else is
real, so faults reach ``specrag serve`` the way a failing Ollama would:

* ``ok``: answers with a draft in the documented response shape (``tests/contract/fixtures/ollama_chat.json``,
  content and per-token ``logprobs`` replaced);
* ``error``: HTTP 500 with Ollama's error body (a crashed model runner);
* ``hang``: holds every request without answering until the mode changes (then answers in the new mode);
* :meth:`FakeOllama.vanish`: drops the held connections without a response and stops listening (the process
  died); :meth:`FakeOllama.start` brings it back on the same port.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from tests.contract.servers import fixture

Mode = Literal["ok", "error", "hang"]
DRAFT = " The stone was found in 1799 at Fort Julien near Rashid. Answer: near Rashid (Rosetta), Egypt"
HOLD_LIMIT_S = 300.0  # a held request is answered after this long whatever happens (no thread outlives a test)


def chat_response(content: str = DRAFT) -> dict[str, Any]:
    """The documented ``/api/chat`` response carrying ``content``, one log-probability per word piece."""
    resp = copy.deepcopy(fixture("ollama_chat")["response"])
    pieces = re.findall(r"\s*\S+", content)
    resp["message"]["content"] = content
    resp["logprobs"] = [{"token": p, "logprob": -0.05, "bytes": list(p.encode())} for p in pieces]
    resp["eval_count"] = len(pieces)
    return dict(resp)


class FakeOllama:
    """The controllable backend (see the module docstring). ``requests`` counts the chat requests received."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.mode: Mode = "ok"
        self.requests = 0
        self.received = threading.Event()
        self._changed = threading.Condition()
        self._held: list[socket.socket] = []
        self._vanished = False
        self._server: ThreadingHTTPServer | None = None
        self.start()

    def set_mode(self, mode: Mode) -> None:
        """Switch mode; held requests are answered in the new one (unless it is ``hang`` again)."""
        with self._changed:
            self.mode = mode
            self.received.clear()
            self._changed.notify_all()

    def start(self) -> None:
        """Listen (again) on the same port, in mode ``ok``."""
        fake = self

        class Handler(BaseHTTPRequestHandler):  # HTTP/1.0: one request per connection, nothing kept alive
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                with fake._changed:
                    fake.requests += 1
                    fake.received.set()
                    if fake.mode == "hang":
                        fake._held.append(self.connection)
                        fake._changed.wait_for(lambda: fake.mode != "hang" or fake._vanished, HOLD_LIMIT_S)
                        fake._held.remove(self.connection)
                    if fake._vanished:
                        self.close_connection = True
                        return
                    mode = fake.mode
                if mode == "error":
                    self._reply(500, {"error": "llama runner process has terminated: signal: killed"})
                else:
                    self._reply(200, chat_response())

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        with self._changed:
            self._vanished = False
            self.mode = "ok"
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def vanish(self) -> None:
        """Stop listening and drop every held connection without a response (the backend died)."""
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        with self._changed:
            self._vanished = True
            for conn in self._held:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._changed.notify_all()
        self._server = None

    def close(self) -> None:
        """Release held requests and stop."""
        self.set_mode("ok")
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
