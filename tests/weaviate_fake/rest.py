"""The fake Weaviate's REST side: the ``/v1`` endpoints ``weaviate-client`` v4 calls for meta, schema and tenants.

Response shapes: see fixtures/SOURCES.md. Unknown endpoints answer 501 with the path, so a client change that
needs a new endpoint shows up as a clear test failure.
"""

from __future__ import annotations

import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from tests.weaviate_fake.index import FakeError, FakeIndex, fixture

_CLASS = re.compile(r"^/v1/schema/([A-Za-z][_0-9A-Za-z]*)$")
_TENANTS = re.compile(r"^/v1/schema/([A-Za-z][_0-9A-Za-z]*)/tenants$")
_TENANT = re.compile(r"^/v1/schema/([A-Za-z][_0-9A-Za-z]*)/tenants/([A-Za-z0-9_-]+)$")


def make_handler(index: FakeIndex, api_key: str | None, calls: list[str]) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``index``; requests are appended to ``calls`` as ``"METHOD /path"``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: Any = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            self._send(status, {"error": [{"message": message}]})

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"null")

        def _dispatch(self) -> None:
            path = urlsplit(self.path).path
            calls.append(f"{self.command} {path}")
            if api_key is not None and self.headers.get("Authorization") != f"Bearer {api_key}":
                self._error(401, "anonymous access not enabled, please provide an auth scheme such as OIDC")
                return
            try:
                with index.lock:
                    self._route(path)
            except FakeError as exc:
                self._error(exc.status, str(exc))

        def _route(self, path: str) -> None:
            method = self.command
            if method == "GET" and path == "/v1/meta":
                self._send(200, fixture("meta.json"))
            elif method == "GET" and path in ("/v1/.well-known/ready", "/v1/.well-known/live"):
                self._send(200)
            elif method == "GET" and path == "/v1/schema":
                self._send(200, {"classes": [c.schema for c in index.collections.values()]})
            elif method == "POST" and path == "/v1/schema":
                self._send(200, index.create_class(self._body()))
            elif m := _CLASS.match(path):
                if method == "GET":
                    self._send(200, index.collection(m[1]).schema)
                elif method == "DELETE":
                    index.collection(m[1])
                    del index.collections[m[1][:1].upper() + m[1][1:]]
                    self._send(200)
                else:
                    self._error(405, f"{method} {path}")
            elif m := _TENANTS.match(path):
                if method == "POST":
                    body = self._body()
                    index.create_tenants(m[1], [t["name"] for t in body])
                    self._send(200, [{"name": t["name"], "activityStatus": "HOT"} for t in body])
                elif method == "GET":
                    coll = index.collection(m[1])
                    self._send(200, [{"name": t, "activityStatus": "HOT"} for t in sorted(coll.tenants)])
                else:
                    self._error(405, f"{method} {path}")
            elif (m := _TENANT.match(path)) and method in ("GET", "HEAD"):
                coll = index.collection(m[1])
                if m[2] in coll.tenants:
                    self._send(200, {"name": m[2], "activityStatus": "HOT"})
                else:
                    self._error(404, f"tenant {m[2]!r} not found")
            else:
                self._error(501, f"fake Weaviate does not implement {method} {path}")

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _dispatch

    return Handler


def make_rest_server(index: FakeIndex, api_key: str | None, calls: list[str]) -> ThreadingHTTPServer:
    """An HTTP server on a free loopback port (``server_address[1]``); run ``serve_forever`` in a thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(index, api_key, calls))
    server.daemon_threads = True
    return server
