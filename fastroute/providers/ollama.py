"""Providers that speak Ollama's native API (``/api/chat``)."""

from __future__ import annotations

from fastroute.formats import ollama as dialect
from fastroute.providers.http import HTTPProvider


class OllamaProvider(HTTPProvider):
    dialect = dialect

    def endpoint(self, base: str) -> str:
        return base + "/api/chat"

    def headers(self, client_key, stream, client_headers=None, request=None):  # type: ignore[no-untyped-def]
        headers = super().headers(client_key, stream, client_headers, request)
        if stream:
            headers["accept"] = "application/x-ndjson"
        return headers
