"""Read input files into documents: .txt, .md, .pdf, .jsonl, and directories of them.

Everything is read and checked before anything is written (see :func:`load_documents`), so a bad input fails the
whole ingest up front instead of leaving a partial store.

Document ids: a file given directly gets its file name (``notes.md``); a file found under a directory argument gets
its path relative to that directory's parent (``corpus/sub/notes.md``), so re-ingesting the same directory from
another working directory produces the same ids. A JSONL line's ``id`` field is its document id.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown"})
SUPPORTED_SUFFIXES = frozenset({*TEXT_SUFFIXES, ".pdf", ".jsonl"})
_BINARY_SNIFF_BYTES = 8192
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$")
_SURROGATE = re.compile("[\ud800-\udfff]")


class IngestError(Exception):
    """An input cannot be ingested; the message (one line) names the file (and line) and says why."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def _shown(path: Path) -> str:
    """``path`` for a message: a name that is not valid UTF-8 shows its bytes escaped."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _lone_surrogate(text: str) -> int | None:
    """Where ``text`` has a lone surrogate (a JSON ``\\ud800`` escape, a file name that is not UTF-8), if anywhere."""
    match = _SURROGATE.search(text)
    return match.start() if match else None


@dataclass(frozen=True, kw_only=True)
class Document:
    """A document to chunk and store.

    Attributes:
        doc_id: Stable id (see the module docstring).
        title: Title (first Markdown heading, PDF title, JSONL ``title``, or the file stem).
        text: Full text.
        source: Where it came from (``path`` or ``path:line``), for messages.
    """

    doc_id: str
    title: str
    text: str
    source: str


@dataclass(frozen=True, kw_only=True)
class LoadedInputs:
    """The result of reading the inputs.

    Attributes:
        documents: All documents, in input order (directories sorted by path).
        files: Files read.
        skipped: ``(path, reason)`` for files not read (unsupported type, empty, no text).
        skipped_records: ``(path, reason)`` for files that were read but had records with no text (JSONL lines
            whose ``text`` is empty), one entry per file naming the lines.
    """

    documents: list[Document]
    files: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    skipped_records: list[tuple[Path, str]] = field(default_factory=list)


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _walk(directory: Path) -> Iterator[Path]:
    """Files under ``directory`` (recursive, sorted, hidden files and directories left out)."""
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not _is_hidden(path, directory):
                yield path


def _read_text(path: Path) -> str:
    """Read a UTF-8 text file.

    Raises:
        IngestError: Unreadable, binary, or not UTF-8.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if b"\x00" in data[:_BINARY_SNIFF_BYTES]:
        raise IngestError(f"{path}: not a text file (binary data)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path}: not a text file (not valid UTF-8 at byte {exc.start})") from exc


def _markdown(text: str) -> tuple[str | None, str]:
    """The first heading (if any) and the text with heading markers removed."""
    title: str | None = None
    lines = []
    for line in text.splitlines():
        match = _HEADING.match(line)
        if match:
            heading = match.group(2).strip()
            if title is None:
                title = heading
            lines.append(heading)
        else:
            lines.append(line)
    return title, "\n".join(lines)


def _load_pdf(path: Path) -> tuple[str | None, str]:
    """Title (from metadata) and text of a PDF.

    Raises:
        IngestError: Corrupt, encrypted, or unreadable.
    """
    try:
        from pypdf import PdfReader
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise IngestError(f"{path}: reading PDFs needs pypdf: run make install") from exc
    pdf_logger = logging.getLogger("pypdf")
    level = pdf_logger.level
    pdf_logger.setLevel(logging.CRITICAL)  # pypdf logs repairs of damaged files; we report errors ourselves
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _read_pdf(PdfReader, path)
    finally:
        pdf_logger.setLevel(level)


def _read_pdf(reader_type: Any, path: Path) -> tuple[str | None, str]:
    try:
        reader = reader_type(path)
        if reader.is_encrypted:
            try:
                ok = reader.decrypt("")
            except Exception as exc:
                raise IngestError(f"{path}: the PDF is encrypted") from exc
            if not ok:
                raise IngestError(f"{path}: the PDF is encrypted (password protected)")
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = reader.metadata.title if reader.metadata is not None else None
    except IngestError:
        raise
    except OSError as exc:
        raise IngestError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except Exception as exc:  # pypdf raises many types on damaged files
        raise IngestError(f"{path}: not a readable PDF ({type(exc).__name__}: {str(exc)[:200]})") from exc
    # A damaged text map can decode to lone surrogates, which no UTF-8 store or model accepts: replace them.
    text = _SURROGATE.sub("\ufffd", "\n\n".join(p.strip() for p in pages if p.strip()))
    title = _SURROGATE.sub("\ufffd", meta_title.strip()) if isinstance(meta_title, str) and meta_title.strip() else None
    return title, text


def _load_jsonl(path: Path) -> tuple[list[Document], list[int]]:
    """One document per line ``{"id", "title", "text"}``; a record whose ``text`` is an empty string has nothing to
    index and is skipped (the shared PopQA corpus has such lines).

    Returns:
        The documents, and the numbers of the lines skipped for empty text.

    Raises:
        IngestError: With ``file:line`` for a line that is not such an object.
    """
    documents = []
    empty: list[int] = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise IngestError(f"{where}: not valid JSON ({exc.msg})") from exc
        except RecursionError as exc:
            raise IngestError(f"{where}: not valid JSON (nested too deeply)") from exc
        except ValueError as exc:  # e.g. an integer literal past Python's digit limit
            raise IngestError(f"{where}: not valid JSON ({exc})") from exc
        if not isinstance(record, dict):
            raise IngestError(f"{where}: expected an object with id, title and text")
        doc_id, title, text = record.get("id"), record.get("title", ""), record.get("text")
        if not isinstance(doc_id, str | int) or isinstance(doc_id, bool) or str(doc_id).strip() == "":
            raise IngestError(f"{where}: missing or invalid 'id' (a non-empty string)")
        if not isinstance(text, str):
            raise IngestError(f"{where}: missing 'text' (a string)")
        if not text.strip():
            empty.append(number)
            continue
        if title is None:
            title = ""
        if not isinstance(title, str):
            raise IngestError(f"{where}: 'title' must be a string")
        for name, value in (("id", str(doc_id)), ("title", title), ("text", text)):
            at = _lone_surrogate(value)
            if at is not None:
                raise IngestError(f"{where}: '{name}' is not valid Unicode (a lone surrogate escape at character {at})")
        documents.append(Document(doc_id=str(doc_id), title=title.strip(), text=text.strip(), source=where))
    return documents, empty


def load_file(path: Path, doc_id: str) -> list[Document]:
    """Read one supported file.

    Args:
        path: The file.
        doc_id: Its document id (unused for JSONL, whose lines carry their own).

    Returns:
        Its documents (none if it holds no text).

    Raises:
        IngestError: The file cannot be read or parsed.
    """
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _load_jsonl(path)[0]
    if suffix == ".pdf":
        title, text = _load_pdf(path)
    elif suffix in {".md", ".markdown"}:
        title, text = _markdown(_read_text(path))
    else:
        title, text = None, _read_text(path)
    text = text.strip()
    if not text:
        return []
    return [Document(doc_id=doc_id, title=title or path.stem, text=text, source=str(path))]


def _expand(paths: Iterable[Path]) -> Iterator[tuple[Path, str]]:
    """``(file, doc_id)`` for each input file, directories expanded.

    Raises:
        IngestError: A path does not exist.
    """
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            base = path.resolve().parent
            for file in _walk(path):
                yield file, file.resolve().relative_to(base).as_posix()
        elif path.is_file():
            yield path, path.name
        elif path.exists():
            raise IngestError(f"{path}: not a regular file or directory")
        else:
            raise IngestError(f"{path}: no such file or directory")


def load_documents(paths: Sequence[Path]) -> LoadedInputs:
    """Read and check every input before anything is stored.

    Args:
        paths: Files and directories (directories are searched recursively, hidden entries skipped).

    Returns:
        The documents, the files read, and the files skipped with reasons (unsupported type, empty, no text).

    Raises:
        IngestError: A path is missing, or a file is unreadable, binary, not UTF-8, a corrupt or encrypted PDF, or
            a JSONL file with a bad line (the message names the file, and the line for JSONL).
    """
    if not paths:
        raise IngestError("nothing to ingest: give at least one file or directory")
    for raw in paths:  # fail on a missing path before reading any file
        if not Path(raw).exists():
            raise IngestError(f"{raw}: no such file or directory")
    documents: list[Document] = []
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    skipped_records: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for path, doc_id in _expand(paths):
        key = path.resolve()
        if key in seen:
            continue
        seen.add(key)
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            skipped.append((path, f"unsupported type {path.suffix or '(no extension)'}"))
            continue
        if _lone_surrogate(doc_id) is not None:  # its id could not be stored
            raise IngestError(f"{_shown(path)}: the file name is not valid UTF-8 (rename the file)")
        if path.suffix.lower() == ".jsonl":
            loaded, empty = _load_jsonl(path)
            if empty:
                lines = ", ".join(map(str, empty[:5])) + (", ..." if len(empty) > 5 else "")
                skipped_records.append((path, f"{len(empty)} record(s) with empty text skipped (line {lines})"))
        else:
            loaded = load_file(path, doc_id)
        if not loaded:
            skipped.append((path, "no text"))
            continue
        files.append(path)
        documents.extend(loaded)
    return LoadedInputs(documents=documents, files=files, skipped=skipped, skipped_records=skipped_records)
