"""Hostile input to the ingest parsers: arbitrary bytes and text as .txt/.md/.jsonl/.pdf files give documents or a
one-line :class:`IngestError` naming the file, never another exception, and a failed ingest writes nothing."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.store.chunking import chunk_document
from app.store.ingest import IngestError, ingest_paths, load_documents
from app.store.loaders import LoadedInputs, _read_pdf
from app.store.protocol import Chunk
from tests.fakes import FakeEmbedder
from tests.unit.test_ingest_parsing import make_pdf

PROPERTY = settings(
    database=None,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
SUFFIXES = [".txt", ".md", ".markdown", ".jsonl", ".pdf"]
PDF = make_pdf("The keeper logged every storm.", title="Keeper Log")

# Text with what breaks parsers: control characters (st.characters() gives NUL too), BOMs, line and paragraph
# separators, Markdown and JSON syntax, lone surrogates.
ODD = st.sampled_from(
    ["\x1f", "\x7f", "\ufeff", "\u2028", "\u2029", "\r", "\r\n", "\n\n", "# ", "## x ##", "{", '"', "\\"]
)
VALID_TEXT = st.lists(st.one_of(st.characters(), ODD), max_size=120).map("".join)
TEXT = st.lists(st.one_of(st.characters(), ODD, st.characters(categories=["Cs"])), max_size=120).map("".join)


def encoded(text: str) -> bytes:
    """UTF-8, with any lone surrogate written as the (invalid) bytes it would have."""
    return text.encode("utf-8", "surrogatepass")


def check_loaded(loaded: LoadedInputs) -> None:
    """What every successful load must give: non-empty documents whose ids and text can be hashed and stored."""
    for document in loaded.documents:
        assert document.text.strip() and document.text == document.text.strip()
        for value in (document.doc_id, document.title, document.text):
            value.encode("utf-8")  # strict: no lone surrogate reaches the store or the embedder
        assert chunk_document(document)


def load_or_clean_error(path: Path) -> LoadedInputs | IngestError:
    try:
        loaded = load_documents([path])
    except IngestError as exc:
        message = str(exc)
        assert message and "\n" not in message and message == " ".join(message.split())
        assert message.startswith(str(path)), message  # names the file
        event(f"IngestError: {message.removeprefix(str(path)).split('(')[0].strip(': ')}"[:60])
        return exc
    check_loaded(loaded)
    event(f"loaded: {min(len(loaded.documents), 3)} documents (3: or more)")
    return loaded


@settings(PROPERTY, max_examples=400)
@given(suffix=st.sampled_from(SUFFIXES), data=st.one_of(st.binary(max_size=2_000), TEXT.map(encoded)))
def test_arbitrary_bytes_give_documents_or_a_clean_error(tmp_path: Path, suffix: str, data: bytes) -> None:
    path = tmp_path / f"input{suffix}"
    path.write_bytes(data)
    result = load_or_clean_error(path)
    if isinstance(result, LoadedInputs) and suffix in (".txt", ".md", ".markdown"):
        assert b"\x00" not in data and (result.documents or not data.decode("utf-8-sig").strip())


@settings(PROPERTY, max_examples=200)
@given(suffix=st.sampled_from([".txt", ".md", ".markdown"]), text=VALID_TEXT)
def test_valid_utf8_text_is_always_read(tmp_path: Path, suffix: str, text: str) -> None:
    path = tmp_path / f"notes{suffix}"
    path.write_bytes(text.encode())
    if "\x00" in text:  # taken for a binary file
        assert isinstance(load_or_clean_error(path), IngestError)
        return
    loaded = load_documents([path])
    check_loaded(loaded)
    if suffix == ".txt":
        assert [d.text for d in loaded.documents] == ([text.removeprefix("\ufeff").strip()] if text.strip() else [])


JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT)
JSON_VALUE = st.recursive(
    JSON_SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=8
)
RECORD = st.fixed_dictionaries(
    {"id": st.one_of(TEXT, st.integers(), st.booleans(), st.none()), "text": st.one_of(TEXT, JSON_VALUE)},
    optional={"title": st.one_of(TEXT, st.none(), JSON_VALUE), "extra": JSON_VALUE},
)
GOOD_RECORD = st.fixed_dictionaries(
    {"id": st.one_of(VALID_TEXT.map("id {}".format), st.integers()), "text": VALID_TEXT.map("Text: {}".format)},
    optional={"title": st.one_of(VALID_TEXT, st.none())},
)
LINE = st.one_of(
    GOOD_RECORD.map(json.dumps),
    RECORD.map(json.dumps),  # ensure_ascii: a lone surrogate becomes a "\ud800" escape, as in a real file
    JSON_VALUE.map(json.dumps),
    TEXT,
    st.just(""),
    st.just("   "),
)


def valid_line(line: str) -> bool | None:
    """Whether a JSONL line is a good record (``None``: blank, skipped). The loader's rules, restated."""
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return False
    if not isinstance(record, dict):
        return False
    doc_id, title, text = record.get("id"), record.get("title", ""), record.get("text")
    if isinstance(doc_id, bool) or not isinstance(doc_id, str | int) or not str(doc_id).strip():
        return False
    if not isinstance(text, str):
        return False
    if not text.strip():
        return None  # nothing to index: the record is skipped
    if not isinstance(title, str | None):
        return False
    return all(_encodes(v) for v in (str(doc_id), title or "", text))


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@settings(PROPERTY, max_examples=400)
@given(lines=st.one_of(st.lists(LINE, max_size=6), st.lists(GOOD_RECORD.map(json.dumps) | st.just(""), max_size=6)))
def test_jsonl_lines_give_their_records_or_the_first_bad_line(tmp_path: Path, lines: list[str]) -> None:
    path = tmp_path / "corpus.jsonl"
    data = encoded("\n".join(lines))
    path.write_bytes(data)
    result = load_or_clean_error(path)
    if b"\x00" in data[:8192]:
        assert isinstance(result, IngestError) and "binary data" in str(result)
        return
    try:
        physical = data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:  # a raw lone surrogate in a non-JSON line: the file is not UTF-8
        assert isinstance(result, IngestError) and "not valid UTF-8" in str(result)
        return
    verdicts = [valid_line(line) for line in physical]
    if False in verdicts:
        first_bad = verdicts.index(False) + 1
        assert isinstance(result, IngestError) and str(result).startswith(f"{path}:{first_bad}: "), result
    else:
        assert isinstance(result, LoadedInputs) and len(result.documents) == verdicts.count(True)


MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, len(PDF) - 1), st.integers(0, 255)),
    st.tuples(st.just("cut"), st.integers(0, len(PDF)), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, len(PDF)), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, len(PDF) - 1), st.integers(1, 64)),
)


def mutate(data: bytes, mutations: Sequence[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, at, value in mutations:
        at = min(at, len(out))
        if kind == "flip" and at < len(out):
            out[at] = value
        elif kind == "cut":
            del out[at:]
        elif kind == "insert":
            out[at:at] = bytes([value]) * (1 + value % 7)
        elif kind == "delete":
            del out[at : at + value]
    return bytes(out)


@pytest.mark.timeout(600)
@settings(PROPERTY, max_examples=400)
@given(mutations=st.lists(MUTATION, min_size=1, max_size=5))
def test_damaged_pdfs_give_text_or_a_clean_error(tmp_path: Path, mutations: list[tuple[str, int, int]]) -> None:
    path = tmp_path / "damaged.pdf"
    path.write_bytes(mutate(PDF, mutations))
    result = load_or_clean_error(path)
    if isinstance(result, IngestError):
        assert "PDF" in str(result)


CONTENT = st.lists(LINE, max_size=4).map(lambda lines: encoded("\n".join(lines)))


class RecordingStore:
    """A store that records every call, to show that a failed ingest touched nothing."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.chunks: dict[str, Chunk] = {}

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        self.calls.append("existing_ids")
        return set(ids) & set(self.chunks)

    def add(self, chunks: Sequence[Chunk]) -> int:
        self.calls.append("add")
        new = [c for c in chunks if c.id not in self.chunks]
        self.chunks.update((c.id, c) for c in new)
        return len(new)

    def optimize(self) -> None:
        self.calls.append("optimize")


@settings(PROPERTY, max_examples=150)
@given(files=st.lists(st.tuples(st.sampled_from(SUFFIXES), st.one_of(st.binary(max_size=500), CONTENT)), max_size=3))
def test_a_bad_input_anywhere_writes_nothing(tmp_path: Path, files: list[tuple[str, bytes]]) -> None:
    root = tmp_path / f"kb{len(list(tmp_path.iterdir()))}"
    root.mkdir()
    (root / "a-good.md").write_text("# Harbour\n\nThe harbour froze in 1890.", encoding="utf-8")
    for i, (suffix, data) in enumerate(files):
        (root / f"f{i}{suffix}").write_bytes(data)
    store = RecordingStore()
    try:
        report = ingest_paths([root], store, FakeEmbedder(), batch_size=2, progress=False)  # type: ignore[arg-type]
    except IngestError as exc:
        assert "\n" not in str(exc)
        assert store.calls == [], "a failed ingest must not touch the store"
        event("IngestError")
        return
    event("ingested")
    assert report.chunks_added == len(store.chunks) >= 1
    assert store.calls[0] == "existing_ids" and store.calls[-1] == "optimize"


# ---------------------------------------------------------------- defects found, one test each


@pytest.mark.parametrize("field", ["id", "title", "text"])
def test_a_lone_surrogate_escape_in_jsonl_is_an_ingest_error(tmp_path: Path, field: str) -> None:
    """Was: loaded, then UnicodeEncodeError while hashing the chunk id (or storing it)."""
    record: dict[str, Any] = {"id": "p1", "title": "Title", "text": "Some text."}
    record[field] = record[field] + "\ud800"
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"id": "p0", "text": "fine"}) + "\n" + json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(IngestError, match=rf"c\.jsonl:2: '{field}' is not valid Unicode"):
        load_documents([path])
    store = RecordingStore()
    with pytest.raises(IngestError):
        ingest_paths([path], store, FakeEmbedder(), progress=False)  # type: ignore[arg-type]
    assert store.calls == []


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("[" * 100_000, "nested too deeply"),
        ('{"id": "x", "text": ' + "[" * 5_000 + "]" * 5_000 + "}", "nested too deeply"),
        ('{"id": ' + "9" * 5_000 + ', "text": "t"}', "not valid JSON"),  # past Python's int digit limit
    ],
    ids=["100k-levels", "deep-text", "huge-int"],
)
def test_jsonl_lines_json_cannot_parse_are_ingest_errors(tmp_path: Path, line: str, expected: str) -> None:
    """Was: RecursionError / ValueError out of the loader."""
    path = tmp_path / "c.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(IngestError, match=rf"c\.jsonl:1: .*{expected}"):
        load_documents([path])


@pytest.mark.skipif(os.name != "posix", reason="file names are bytes on POSIX")
def test_a_file_name_that_is_not_utf8_is_an_ingest_error(tmp_path: Path) -> None:
    """Was: UnicodeEncodeError while hashing the chunk id (the name is the document id)."""
    root = tmp_path / "kb"
    root.mkdir()
    (root / "good.txt").write_text("Fine.", encoding="utf-8")
    bad = os.fsdecode(bytes(root) + b"/caf\xe9.txt")
    Path(bad).write_text("Bad name, good text.", encoding="utf-8")
    store = RecordingStore()
    with pytest.raises(IngestError, match=r"caf\\xe9\.txt: the file name is not valid UTF-8") as info:
        ingest_paths([root], store, FakeEmbedder(), progress=False)  # type: ignore[arg-type]
    str(info.value).encode("utf-8")  # the message itself can be printed anywhere
    assert store.calls == []


def test_error_messages_are_one_line_even_for_odd_file_names(tmp_path: Path) -> None:
    path = tmp_path / "two\nlines\t.txt"
    path.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(IngestError) as info:
        load_documents([path])
    assert "\n" not in str(info.value) and "not a text file" in str(info.value)


def test_lone_surrogates_in_pdf_text_are_replaced() -> None:
    """A damaged text map can decode to lone surrogates: the PDF keeps its text, with U+FFFD in their place."""

    class Page:
        def extract_text(self) -> str:
            return "Keeper \ud835 log"

    class Meta:
        title = "Log \udc00"

    class Reader:
        is_encrypted = False

        def __init__(self, path: Path) -> None:
            self.pages = [Page()]
            self.metadata = Meta()

    title, text = _read_pdf(Reader, Path("x.pdf"))
    assert text == "Keeper \ufffd log" and title == "Log \ufffd"
