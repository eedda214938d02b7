"""A fake Weaviate server on loopback: REST (schema, tenants, meta) and gRPC (search, batch, tenants, aggregate).

It speaks the wire protocol of the real server, so ``weaviate-client`` v4 runs unmodified against it; the data
sits in an in-memory index with exact cosine, BM25 and hybrid fusion. Response shapes and their documentation
sources: ``fixtures/SOURCES.md``. It is a test double for the adapter's wire use, not a replacement for the live
run against a real server (``WEAVIATE_URL``).
"""

from __future__ import annotations

import threading
from types import TracebackType

from tests.weaviate_fake.grpc_service import make_grpc_server
from tests.weaviate_fake.index import FakeIndex
from tests.weaviate_fake.rest import make_rest_server


class FakeWeaviate:
    """Start with ``with FakeWeaviate() as fake:``; connect to ``fake.url`` and ``fake.grpc_port``.

    Args:
        api_key: When set, every REST and gRPC call must carry ``Authorization: Bearer <api_key>``.
    """

    def __init__(self, api_key: str | None = None) -> None:
        self.index = FakeIndex()
        self.calls: list[str] = []
        self._rest = make_rest_server(self.index, api_key, self.calls)
        self._grpc, self.grpc_port = make_grpc_server(self.index, api_key, self.calls)
        self.url = f"http://127.0.0.1:{self._rest.server_address[1]}"
        self._thread = threading.Thread(target=self._rest.serve_forever, name="fake-weaviate-rest", daemon=True)

    def __enter__(self) -> FakeWeaviate:
        self._grpc.start()
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._rest.shutdown()
        self._rest.server_close()
        self._grpc.stop(grace=None)
