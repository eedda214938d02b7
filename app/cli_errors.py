"""Turn expected failures into one ``error: ...`` line on stderr and an exit code, never a traceback.

Use as a decorator on every Typer command::

    @app.command()
    @cli_errors
    def ask(question: str) -> None: ...

Expected errors (bad input, missing store, missing model package, wrong embedder, ...) exit with status 1;
Ctrl-C exits with 130 and says the command can be re-run. Anything else is a bug: it is reported in one line too,
with a hint to set ``SPECRAG_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

P = ParamSpec("P")
R = TypeVar("R")

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class CLIError(Exception):
    """An error to show to the user as is (raise it from command code for a clean one-line failure)."""


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Error types whose message is meant for the user (imported lazily so the CLI stays fast to start)."""
    from app.llm.protocol import BackendUnavailableError, NotSupportedError
    from app.models import ModelNotInstalledError
    from app.store.errors import StoreError
    from app.store.loaders import IngestError
    from app.store.protocol import StoreNotFoundError
    from app.trace.model import TraceError

    types: list[type[BaseException]] = [
        CLIError,
        TraceError,
        IngestError,
        StoreError,
        StoreNotFoundError,
        BackendUnavailableError,
        NotSupportedError,
        ModelNotInstalledError,
    ]
    try:
        from app.embed.minilm import EmbedderUnavailableError

        types.append(EmbedderUnavailableError)
    except ImportError:  # pragma: no cover
        pass
    return (*types, FileNotFoundError, PermissionError, ValueError)


def fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    """Print ``error: message`` on stderr and return the exit to raise (``raise fail(...)``)."""
    first_line = " ".join(str(message).split()) or "failed"
    err_console.print(f"[bold red]error:[/] {escape(first_line)}")
    return typer.Exit(code)


def _notes(exc: BaseException) -> str:
    """The exception's notes (PEP 678), e.g. the run id of a failed run's trace, for the same line."""
    notes = [" ".join(str(n).split()) for n in getattr(exc, "__notes__", ())]
    return f" [{'; '.join(n for n in notes if n)}]" if any(notes) else ""


def cli_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Decorator: run a command, mapping failures to one stderr line and an exit code (see module docstring)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt as exc:
            err_console.print(f"[yellow]interrupted; re-run to resume[/]{escape(_notes(exc))}")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except _expected_errors() as exc:
            raise fail(str(exc) + _notes(exc)) from None
        except Exception as exc:
            if os.environ.get("SPECRAG_DEBUG"):
                raise
            raise fail(
                f"unexpected {type(exc).__name__}: {exc}{_notes(exc)} (set SPECRAG_DEBUG=1 for the traceback)"
            ) from None

    return wrapper
