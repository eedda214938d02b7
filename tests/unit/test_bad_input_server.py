"""Hostile input against the chat server, in process with fake backends.

Requests generated from the server's own OpenAPI schema (schemathesis: schema-valid and schema-violating cases,
a bounded number per operation), hostile message texts, oversized and deeply nested bodies, invalid UTF-8, lone
surrogates, and path-like ids in the trace routes. No response may be a 5xx (a 503 only where the schema
documents it, which with fake backends and one request at a time should not happen either), and every JSON error
is an OpenAI-style error object. ``pytest -s`` prints how many cases each target ran.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.checkpoint.memory import InMemorySaver
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from starlette.types import Message

from app.server.app import create_app
from app.settings import ServerSettings, Settings
from tests.unit.test_server import QUESTION, Setup

# hypothesis-jsonschema re-registers the e-mail formats on every schema it compiles, and says so each time.
pytestmark = [pytest.mark.filterwarnings("ignore:Overriding standard format:hypothesis.errors.HypothesisWarning")]

LIMIT = 20_000  # Setup's SPECRAG_SERVER__MAX_BODY_BYTES
ERROR_KEYS = {"message", "type", "param", "code"}
Reply = Any  # Starlette's TestClient answers with httpx2 responses (an httpx fork); they read like httpx ones

# (method, path, generation mode, max examples): about 3,000 cases in all, a minute or two on 2 cores (generating
# chat bodies costs most of it).
TARGETS: list[tuple[str, str, GenerationMode, int]] = [
    ("POST", "/v1/chat/completions", GenerationMode.POSITIVE, 400),
    ("POST", "/v1/chat/completions", GenerationMode.NEGATIVE, 250),
    ("GET", "/v1/models", GenerationMode.POSITIVE, 5),
    ("GET", "/v1/traces/{run_id}", GenerationMode.POSITIVE, 500),
    ("GET", "/v1/threads/{thread_id}/traces", GenerationMode.POSITIVE, 500),
    ("GET", "/ui/runs", GenerationMode.POSITIVE, 500),
    ("GET", "/ui/runs", GenerationMode.NEGATIVE, 300),
    ("GET", "/ui/runs/{run_id}", GenerationMode.POSITIVE, 500),
]
# A string path parameter has no schema-violating value, so those operations run schema-valid cases only.

FUZZ = settings(
    database=None,
    deadline=None,
    derandomize=True,  # the same cases on every run: a failure in CI reproduces locally
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


class Server:
    """The app with fake backends, running (lifespan entered) for the whole module."""

    def __init__(self, tmp_path: Path) -> None:
        self.setup = Setup(tmp_path)
        self.app = self.setup.app
        self.schema = schemathesis.openapi.from_dict(self.app.openapi())
        self.client = TestClient(self.app, raise_server_exceptions=False)
        self.run_id = ""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("bad-input-server"))
    with s.client:
        # One real run, so that generated requests can also meet a run id and a thread that exist.
        body = {"model": "speculative-rag", "messages": [{"role": "user", "content": QUESTION}]}
        r = s.client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        s.run_id = r.json()["specrag"]["run_id"]
        yield s


def send(client: TestClient, case: schemathesis.Case) -> Reply:
    """Send a generated case as a client on the wire would (header values as raw UTF-8 bytes)."""
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    headers = {k: v.encode("utf-8", "surrogatepass") if isinstance(v, str) else v for k, v in kwargs["headers"].items()}
    extra: dict[str, Any] = {}
    if "json" in kwargs:
        extra["json"] = kwargs["json"]
    elif "data" in kwargs:
        data = kwargs["data"]
        extra["content"] = data if isinstance(data, bytes) else str(data).encode("utf-8", "surrogatepass")
    if kwargs.get("cookies"):
        extra["cookies"] = kwargs["cookies"]
    return client.request(kwargs["method"], kwargs["url"], headers=headers, params=kwargs.get("params"), **extra)


def sse_errors(text: str) -> list[dict[str, Any]]:
    """The error objects a server-sent event stream carried (a run that failed after the stream started)."""
    out = []
    for block in text.split("\n\n"):
        data = block.removeprefix("data: ").strip()
        if data.startswith("{"):
            event = json.loads(data)
            if "error" in event:
                out.append(event["error"])
    return out


def assert_clean(response: Reply, path: str, documented: set[str]) -> None:
    """No server error (a 503 only if documented), and every error an OpenAI-style object (or the /ui HTML page)."""
    status = response.status_code
    assert status < 500 or (status == 503 and "503" in documented), f"{status}: {response.text[:500]}"
    content_type = response.headers.get("content-type", "")
    if status >= 400:
        if path.startswith("/ui/") and content_type.startswith("text/html"):
            assert "<title>" in response.text
            return
        assert content_type.startswith("application/json"), content_type
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
        message = body["error"]["message"]
        assert isinstance(message, str) and message and "\n" not in message
    elif content_type.startswith("text/event-stream"):
        errors = sse_errors(response.text)
        assert all(e["type"] != "server_error" for e in errors), errors
        assert response.text.rstrip().endswith("data: [DONE]") or errors


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("method", "path", "mode", "examples"), TARGETS, ids=[f"{m} {p} {g.value}" for m, p, g, _ in TARGETS]
)
def test_generated_requests_get_no_server_error(
    server: Server, method: str, path: str, mode: GenerationMode, examples: int
) -> None:
    operation = server.schema[path][method]
    documented = set(operation.definition.raw.get("responses", {}))
    statuses: Counter[int] = Counter()

    # The model is a free string in the schema, so almost every generated body names an unknown one, and the last
    # message is rarely a user's with text: most schema-valid bodies get a served model, and half of those a last
    # message from the user (its generated content kept when it has one), so that the graph also runs on generated
    # messages, context and thread ids. Path ids are sometimes replaced by the run id that exists (the 200 path).
    @settings(FUZZ, max_examples=examples)
    @given(
        case=operation.as_strategy(generation_mode=mode),
        model=st.sampled_from(["speculative-rag", "standard-rag", None]),
        user_text=st.one_of(st.none(), st.text(min_size=1)),
        real_id=st.booleans(),
    )
    def check(case: schemathesis.Case, model: str | None, user_text: str | None, real_id: bool) -> None:
        body = case.body
        if mode is GenerationMode.POSITIVE and model and isinstance(body, dict) and "model" in body:
            body["model"] = model
            if user_text is not None and body.get("messages"):
                last = body["messages"][-1]
                last["role"] = "user"
                last.setdefault("content", user_text)
        if real_id and case.path_parameters and "run_id" in case.path_parameters:
            case.path_parameters["run_id"] = server.run_id
        response = send(server.client, case)
        statuses[response.status_code] += 1
        assert_clean(response, path, documented)
        # Starlette's TestClient answers with an httpx2 response, which from_httpx reads like an httpx one.
        checked = schemathesis.Response.from_httpx(response, verify=True)
        case.validate_response(checked, checks=[status_code_conformance, response_schema_conformance])

    check()
    total = sum(statuses.values())
    print(f"\nschemathesis {method} {path} {mode.value}: {total} cases, statuses {dict(sorted(statuses.items()))}")
    assert total >= min(examples, 50), "too few cases were generated to mean anything"
    assert not any(s >= 500 for s in statuses)


TEXT = st.text(st.one_of(st.characters(), st.sampled_from("\x00\x1f\u2028\u200b\ufeff \t\n")))
SURROGATE = st.characters(categories=["Cs"])


@pytest.mark.timeout(300)
def test_hostile_message_texts_get_an_answer_or_a_clean_error(server: Server) -> None:
    """The query path over HTTP: any text (control characters, lone surrogates, blank, huge) as the question."""
    statuses: Counter[int] = Counter()

    @settings(FUZZ, max_examples=300)
    @given(
        text=st.one_of(
            TEXT,
            st.builds(lambda s, n: s * n, TEXT, st.integers(1, 2_000)),  # up to huge
            st.builds(lambda a, c, b: a + c + b, TEXT, SURROGATE, TEXT),  # a JSON "\\udXXX" escape
        ),
        model=st.sampled_from(["speculative-rag", "standard-rag"]),
        stream=st.booleans(),
        as_parts=st.booleans(),
    )
    def check(text: str, model: str, stream: bool, as_parts: bool) -> None:
        content: Any = [{"type": "text", "text": text}] if as_parts else text
        body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": content}]}
        # Serialised by hand: a lone surrogate goes out as a JSON \\ud800 escape, as a hostile client would send it.
        raw = json.dumps(body).encode()
        r = server.client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
        statuses[r.status_code] += 1
        assert_clean(r, "/v1/chat/completions", {"503"})
        if len(raw) > LIMIT:
            assert r.status_code == 413
        elif any(0xD800 <= ord(c) <= 0xDFFF for c in text):
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_unicode"
        elif not text.strip():
            assert r.status_code == 400 and r.json()["error"]["code"] == "empty_content"
        else:
            assert r.status_code == 200, r.text[:500]

    check()
    print(f"\nhostile message texts: {sum(statuses.values())} cases, statuses {dict(sorted(statuses.items()))}")
    assert statuses[200] >= 50 and statuses[400] >= 10 and statuses[413] >= 10 and statuses[422] >= 10


# ---------------------------------------------------------------- explicit cases


def error_of(response: Reply, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS
    return dict(body["error"])


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    "text", ["Paris \ud800?", "\udcff", "ok \udfff\ud800 then"], ids=["high", "low-alone", "reversed-pair"]
)
@pytest.mark.parametrize("where", ["question", "part", "history"])
def test_lone_surrogates_in_messages_are_a_422(server: Server, text: str, where: str) -> None:
    """A JSON \\ud800 escape decodes to text no model or store can encode: it was a 500 (or a broken stream)."""
    cases: dict[str, list[dict[str, Any]]] = {
        "question": [{"role": "user", "content": text}],
        "part": [{"role": "user", "content": [{"type": "text", "text": text}]}],
        "history": [
            {"role": "user", "content": text},
            {"role": "assistant", "content": "An answer."},
            {"role": "user", "content": QUESTION},
        ],
    }
    messages = cases[where]
    for stream in (False, True):
        raw = json.dumps({"model": "speculative-rag", "stream": stream, "messages": messages}).encode()
        error = error_of(server.client.post("/v1/chat/completions", content=raw, headers=JSON), 422)
        assert error["code"] == "invalid_unicode" and error["param"] == "messages.0"


def test_a_surrogate_in_an_earlier_turn_would_reach_the_model(tmp_path: Path) -> None:
    """Why history is checked too: a model encodes its whole prompt as UTF-8 (llama.cpp's tokenizer does)."""
    from tests.fakes import FakeLLM

    def reply(prompt: Any) -> str:
        for message in prompt.messages:
            message.content.encode("utf-8")  # what the real backends do first
        return "Which river flows through Paris?"

    setup = Setup(tmp_path, verifier=FakeLLM(reply=reply))
    messages = [
        {"role": "user", "content": "Tell me about Paris \ud800."},
        {"role": "assistant", "content": "Paris is the capital of France."},
        {"role": "user", "content": "and the river?"},
    ]
    with TestClient(setup.app, raise_server_exceptions=False) as client:
        raw = json.dumps({"model": "speculative-rag", "messages": messages}).encode()
        assert error_of(client.post("/v1/chat/completions", content=raw, headers=JSON), 422)["param"] == "messages.0"
        messages[0]["content"] = "Tell me about Paris."
        assert client.post("/v1/chat/completions", json={"model": "speculative-rag", "messages": messages}).is_success


INVALID_UTF8 = {
    "ff byte": b"\xff",
    "lone continuation": b"\x80",
    "overlong slash": b"\xc0\xaf",
    "truncated euro": b"\xe2\x82",
    "latin-1 e-acute": "Café".encode("latin-1"),
}


@pytest.mark.parametrize("bad", INVALID_UTF8.values(), ids=INVALID_UTF8.keys())
def test_invalid_utf8_bodies_are_a_400(server: Server, bad: bytes) -> None:
    raw = b'{"model": "speculative-rag", "messages": [{"role": "user", "content": "Paris ' + bad + b'?"}]}'
    error = error_of(server.client.post("/v1/chat/completions", content=raw, headers=JSON), 400)
    assert error["code"] == "invalid_json" and "not UTF-8" in error["message"]
    # Without a JSON content type, the bytes are not parsed at all: a schema error.
    assert error_of(server.client.post("/v1/chat/completions", content=raw), 422)["message"]


def test_an_encoded_surrogate_is_a_422(server: Server) -> None:
    """Python's JSON decoder lets UTF-8-encoded surrogates (ED A0 80) through as lone surrogates."""
    raw = b'{"model": "speculative-rag", "messages": [{"role": "user", "content": "Paris \xed\xa0\x80?"}]}'
    error = error_of(server.client.post("/v1/chat/completions", content=raw, headers=JSON), 422)
    assert error["code"] == "invalid_unicode"


@pytest.fixture(scope="module")
def default_limits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The app with the default body limit (1,000,000 bytes), so that a 100k-level body gets parsed."""
    setup = Setup(tmp_path_factory.mktemp("default-limits"))
    app = create_app(
        Settings(server=ServerSettings()),
        provider=lambda ctx: setup.backends,
        checkpointer=InMemorySaver(),
        trace_store=setup.traces,
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize(
    ("opening", "closing"),
    [(b"[", b"]"), (b'{"a":', b"}"), (b'{"x":[', b"]}")],
    ids=["arrays", "objects", "mixed"],
)
def test_100k_levels_of_nesting_are_a_400(default_limits: TestClient, opening: bytes, closing: bytes) -> None:
    depth = 100_000
    for body in (
        opening * depth + b"1" + closing * depth,  # the whole body
        b'{"model": "speculative-rag", "messages": [{"role": "user", "content": "x"}], "context": '
        + opening * depth
        + b"1"
        + closing * depth
        + b"}",  # inside a field
    ):
        assert len(body) < ServerSettings().max_body_bytes
        error = error_of(default_limits.post("/v1/chat/completions", content=body, headers=JSON), 400)
        assert error["code"] == "invalid_json" and "nested too deeply" in error["message"]
    # Just under the parser's depth: parsed, then refused by the schema or the context check (never a 500).
    levels = 900 // (opening.count(b"[") + opening.count(b"{"))
    shallow = opening * levels + b"1" + closing * levels
    assert default_limits.post("/v1/chat/completions", content=shallow, headers=JSON).status_code == 422
    inside = b'{"model": "speculative-rag", "messages": [{"role": "user", "content": "x"}], "context": {"top_n": '
    r = default_limits.post("/v1/chat/completions", content=inside + shallow + b"}}", headers=JSON)
    assert error_of(r, 400)["param"] == "context.top_n"


def test_oversized_bodies_are_a_413_before_parsing(server: Server, default_limits: TestClient) -> None:
    huge = b'{"model": "speculative-rag", "messages": [{"role": "user", "content": "' + b"x" * 2_000_000 + b'"}]}'
    error = error_of(default_limits.post("/v1/chat/completions", content=huge, headers=JSON), 413)
    assert error["code"] == "request_too_large" and "1000000 bytes" in error["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"model": "speculative-rag", "messages": [{"role": "user", "content": "'
        for _ in range(100):
            yield b"y" * 1000

    assert error_of(server.client.post("/v1/chat/completions", content=chunks(), headers=JSON), 413)["code"]
    # Any route, any method: the limit is checked before routing.
    for method, path in [("GET", "/v1/models"), ("GET", "/ui/runs"), ("POST", "/v1/traces/x"), ("PUT", "/nope")]:
        r = server.client.request(method, path, content=b"z" * (LIMIT + 1))
        assert error_of(r, 413)["code"] == "request_too_large", (method, path)
    for bad_length in ("-1", "1e9", "abc", "99999999999999999999999999"):
        r = server.client.post("/v1/chat/completions", content=b"{}", headers={**JSON, "content-length": bad_length})
        assert 400 <= r.status_code < 500, (bad_length, r.status_code)


PATH_IDS = [
    "../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..%252F..%252Fetc%252Fpasswd",
    "....//....//etc/passwd",
    "..\\..\\windows\\win.ini",
    "%00",
    "0123456789abcdef0123456789abcde%00",
    "abc%00.txt",
    "%ff%fe",
    "%ed%a0%80",
    "..",
    ".",
    "%2F",
    "~root",
    "$(id)",
    "'; DROP TABLE traces; --",
    "a" * 5000,
]
ROUTES = ["/v1/traces/{}", "/v1/threads/{}/traces", "/ui/runs/{}"]


def raw_get(app: FastAPI, path: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` exactly as given (no client normalises ``..`` or re-encodes anything), as uvicorn would pass it."""
    raw = path.encode("latin-1")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote_to_bytes(raw).decode("utf-8", "replace"),
        "raw_path": raw,
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], headers, body


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("hostile", PATH_IDS, ids=[i[:40] for i in PATH_IDS])
def test_path_like_ids_are_refused(server: Server, route: str, hostile: str) -> None:
    path = route.format(hostile)
    status, headers, body = raw_get(server.app, path)
    if status == 307:  # Starlette's trailing-slash redirect ("../" → ".."): to this server, where it is refused
        location = httpx.URL(headers["location"])
        assert location.host == "testserver"
        status, headers, body = raw_get(server.app, location.raw_path.decode("latin-1"))
    assert status in (400, 404), (path, status, body[:300])
    assert_refusal(route, headers.get("content-type", ""), body)
    # Through an HTTP client, which may normalise the path first (then it may reach another page, never a file).
    r = server.client.get(path)
    assert r.status_code < 500 and b"root:" not in r.content
    if r.status_code >= 400:
        assert_refusal(route, r.headers.get("content-type", ""), r.content)


def assert_refusal(route: str, content_type: str, body: bytes) -> None:
    assert b"root:" not in body and b"[fonts]" not in body  # no file was read
    if content_type.startswith("application/json"):
        error = json.loads(body)["error"]
        assert set(error) == ERROR_KEYS and "\n" not in error["message"]
    else:
        assert route.startswith("/ui/") and content_type.startswith("text/html"), (route, content_type)
        assert b"<title>" in body[:2000]


@pytest.mark.parametrize("hostile", ["../../etc/passwd", "a\x00b", "x" * 129, "é", "-leading-dash", ""])
def test_hostile_thread_ids_in_the_header_and_the_query(server: Server, hostile: str) -> None:
    body = {"model": "speculative-rag", "messages": [{"role": "user", "content": QUESTION}]}
    r = server.client.post("/v1/chat/completions", json=body, headers={b"X-Thread-Id": hostile.encode("utf-8")})
    if hostile:
        assert error_of(r, 400)["param"] == "thread_id"
    else:  # an empty header is no thread id: a new thread
        assert r.status_code == 200
    r = server.client.get("/ui/runs", params={"thread_id": hostile})  # a filter: matches no run, or too long
    assert (r.status_code, r.headers["content-type"].split(";")[0]) in ((200, "text/html"), (422, "application/json"))
    r = server.client.get(f"/v1/threads/{quote(hostile, safe='')}/traces")
    assert r.status_code in (400, 404) and set(r.json()["error"]) == ERROR_KEYS
