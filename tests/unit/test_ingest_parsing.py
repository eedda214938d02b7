"""Loaders and chunking, on small files in tmp_path (no model, no store)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from app.store.ingest import (
    Document,
    IngestError,
    chunk_document,
    chunk_id,
    load_documents,
    split_text,
)


def make_pdf(text: str, title: str | None = None) -> bytes:
    """A minimal one-page PDF with one line of text (and an optional /Title)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    info = f"<< /Title ({title}) >>".encode() if title else b"<< >>"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        info,
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# ---------------------------------------------------------------- loaders


def test_txt_title_is_stem_and_text_kept(tmp_path: Path) -> None:
    f = write(tmp_path / "harbour-notes.txt", "The harbour froze in 1890.\n\nShips waited outside.\n")
    loaded = load_documents([f])
    assert loaded.files == [f]
    (doc,) = loaded.documents
    assert doc.doc_id == "harbour-notes.txt"
    assert doc.title == "harbour-notes"
    assert doc.text == "The harbour froze in 1890.\n\nShips waited outside."


def test_markdown_title_is_first_heading(tmp_path: Path) -> None:
    f = write(tmp_path / "m.md", "Intro line.\n\n# The Lighthouse\n\nText here.\n\n## Later section\n\nMore.")
    (doc,) = load_documents([f]).documents
    assert doc.title == "The Lighthouse"
    assert "#" not in doc.text
    assert "Later section" in doc.text


def test_markdown_without_heading_uses_stem(tmp_path: Path) -> None:
    f = write(tmp_path / "plain-notes.md", "No heading here, just text.")
    (doc,) = load_documents([f]).documents
    assert doc.title == "plain-notes"


def test_jsonl_one_document_per_line(tmp_path: Path) -> None:
    lines = [
        {"id": "p1", "title": "First", "text": "Alpha text."},
        {"id": 7, "title": "Second", "text": "Beta text."},
    ]
    f = write(tmp_path / "c.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    docs = load_documents([f]).documents
    assert [(d.doc_id, d.title, d.text) for d in docs] == [
        ("p1", "First", "Alpha text."),
        ("7", "Second", "Beta text."),
    ]


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "expected an object"),
        ('{"title": "t", "text": "x"}', "'id'"),
        ('{"id": "x", "title": "t", "text": 5}', "'text'"),
        ('{"id": "x", "title": 3, "text": "x"}', "'title'"),
    ],
)
def test_jsonl_bad_line_names_file_and_line(tmp_path: Path, bad_line: str, expected: str) -> None:
    good = json.dumps({"id": "ok", "title": "t", "text": "fine"})
    f = write(tmp_path / "c.jsonl", f"{good}\n{good}\n{bad_line}\n")
    with pytest.raises(IngestError, match=rf"c\.jsonl:3: .*{expected}"):
        load_documents([f])


def test_binary_file_is_rejected(tmp_path: Path) -> None:
    f = write(tmp_path / "image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(IngestError, match=r"image\.txt: not a text file"):
        load_documents([f])


def test_non_utf8_text_is_rejected(tmp_path: Path) -> None:
    f = write(tmp_path / "latin1.md", "Caf\u00e9 cr\u00e8me".encode("latin-1"))
    with pytest.raises(IngestError, match=r"latin1\.md: not a text file \(not valid UTF-8"):
        load_documents([f])


def test_corrupt_pdf_is_rejected(tmp_path: Path) -> None:
    f = write(tmp_path / "broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage")
    with pytest.raises(IngestError, match=r"broken\.pdf: not a readable PDF"):
        load_documents([f])


def test_encrypted_pdf_is_rejected(tmp_path: Path) -> None:
    from pypdf import PdfWriter

    plain = write(tmp_path / "plain.pdf", make_pdf("Secret text"))
    writer = PdfWriter(clone_from=plain)
    writer.encrypt("password")
    enc = tmp_path / "locked.pdf"
    with enc.open("wb") as fh:
        writer.write(fh)
    with pytest.raises(IngestError, match=r"locked\.pdf: the PDF is encrypted"):
        load_documents([enc])


def test_pdf_text_and_title(tmp_path: Path) -> None:
    f = write(tmp_path / "log.pdf", make_pdf("The keeper logged every storm.", title="Keeper Log"))
    (doc,) = load_documents([f]).documents
    assert doc.title == "Keeper Log"
    assert doc.text == "The keeper logged every storm."


def test_empty_file_is_skipped_not_fatal(tmp_path: Path) -> None:
    empty = write(tmp_path / "empty.txt", "  \n\n")
    other = write(tmp_path / "other.txt", "Something.")
    loaded = load_documents([empty, other])
    assert [d.doc_id for d in loaded.documents] == ["other.txt"]
    assert loaded.skipped == [(empty, "no text")]


def test_missing_path_fails_before_reading_anything(tmp_path: Path) -> None:
    ok = write(tmp_path / "ok.txt", "fine")
    with pytest.raises(IngestError, match=r"nope\.md: no such file or directory"):
        load_documents([ok, tmp_path / "nope.md"])


def test_no_paths() -> None:
    with pytest.raises(IngestError, match="nothing to ingest"):
        load_documents([])


def test_directory_recursive_sorted_hidden_and_unsupported_skipped(tmp_path: Path) -> None:
    root = tmp_path / "kb"
    write(root / "b.md", "# B\n\nbee")
    write(root / "a.txt", "ay")
    write(root / "sub" / "c.jsonl", json.dumps({"id": "c1", "title": "C", "text": "see"}) + "\n")
    write(root / "picture.png", b"\x89PNG\x00")
    write(root / ".hidden.txt", "secret")
    write(root / ".git" / "config.txt", "secret")
    loaded = load_documents([root])
    assert [d.doc_id for d in loaded.documents] == ["kb/a.txt", "kb/b.md", "c1"]
    assert [(p.name, reason) for p, reason in loaded.skipped] == [("picture.png", "unsupported type .png")]
    assert len(loaded.files) == 3


def test_directory_doc_ids_do_not_depend_on_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "kb" / "a.txt", "ay")
    monkeypatch.chdir(tmp_path)
    first = load_documents([Path("kb")]).documents[0].doc_id
    monkeypatch.chdir(tmp_path / "kb")
    second = load_documents([Path(".").resolve()]).documents[0].doc_id
    assert first == second == "kb/a.txt"


def test_bad_file_inside_directory_is_fatal(tmp_path: Path) -> None:
    write(tmp_path / "kb" / "good.txt", "fine")
    write(tmp_path / "kb" / "bad.txt", b"\x00\x01\x02")
    with pytest.raises(IngestError, match=r"bad\.txt: not a text file"):
        load_documents([tmp_path / "kb"])


# ---------------------------------------------------------------- chunking


def _words(n: int, sentence_len: int = 10) -> str:
    out = []
    for i in range(n):
        word = f"w{i}"
        out.append(word + ("." if (i + 1) % sentence_len == 0 else ""))
    return " ".join(out)


def test_short_text_is_one_chunk_verbatim() -> None:
    text = _words(120)
    assert split_text(text) == [text]
    assert split_text("   ") == []


def test_long_text_windows_overlap_on_sentence_boundaries() -> None:
    text = _words(1000)  # 100 sentences of 10 words
    chunks = split_text(text)
    sizes = [len(c.split()) for c in chunks]
    assert all(s <= 200 for s in sizes)
    assert all(c.endswith(".") for c in chunks)  # cut at sentence ends
    assert len(chunks) == 6  # 200-word windows stepping by 160: 0, 160, ..., 800
    for before, after in itertools.pairwise(chunks):
        overlap = set(before.split()) & set(after.split())
        assert len(overlap) == 40
    covered = {w for c in chunks for w in c.split()}
    assert covered == set(text.split())


def test_paragraph_breaks_are_kept_inside_chunks() -> None:
    para = _words(150)
    chunks = split_text(para + "\n\n" + para.replace("w", "v"))
    assert any("\n\n" in c for c in chunks)


def test_giant_sentence_is_cut_between_words() -> None:
    text = " ".join(f"x{i}" for i in range(700))
    chunks = split_text(text)
    assert all(len(c.split()) <= 200 for c in chunks)
    assert {w for c in chunks for w in c.split()} == set(text.split())


def test_chunk_ids_stable_and_content_based() -> None:
    doc = Document(doc_id="d1", title="T", text=_words(600), source="x")
    first = chunk_document(doc)
    again = chunk_document(doc)
    assert [c.id for c in first] == [c.id for c in again]
    assert all(len(c.id) == 32 for c in first)
    assert first[0].id == chunk_id("d1", first[0].text)
    assert chunk_id("d1", "same text") != chunk_id("d2", "same text")
    assert chunk_id("d1", "text a") != chunk_id("d1", "text b")
    import hashlib

    assert chunk_id("d", "t") == hashlib.sha256(b"d\0t").hexdigest()[:32]
    renamed = chunk_document(Document(doc_id="d1", title="Other title", text=doc.text, source="y"))
    assert [c.id for c in renamed] == [c.id for c in first]  # the title is not part of the id


def test_jsonl_records_with_empty_text_are_skipped_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    rows = [
        {"id": "a", "title": "A", "text": "Alpha."},
        {"id": "b", "title": "B", "text": ""},
        {"id": "c", "text": " "},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    loaded = load_documents([path])
    assert [d.doc_id for d in loaded.documents] == ["a"] and loaded.files == [path]
    assert loaded.skipped_records == [(path, "2 record(s) with empty text skipped (line 2, 3)")]
    path.write_text(json.dumps({"id": "d", "title": "D"}) + "\n", encoding="utf-8")
    with pytest.raises(IngestError, match=r"corpus.jsonl:1: missing 'text'"):
        load_documents([path])
