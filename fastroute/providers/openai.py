"""Providers that speak OpenAI's Chat Completions (OpenAI, llama.cpp, vLLM, LM Studio, Ollama's /v1...)."""

from __future__ import annotations

from fastroute.errors import UpstreamError, UpstreamTimeout
from fastroute.formats import openai as dialect
from fastroute.providers.base import Provider
from fastroute.providers.transport import Reply, StreamReply

_JSON = "application/json"


class OpenAIProvider(Provider):
    passthrough_dialect = "openai"

    def __init__(self, config, client) -> None:  # type: ignore[no-untyped-def]
        super().__init__(config, client)
        self.chat_url = config.base_url.rstrip("/") + "/chat/completions"

    def headers(self, client_key: str | None, stream: bool) -> dict[str, str]:
        key = client_key if self.config.forward_client_key else self.api_key()
        headers = {"content-type": _JSON, "accept": "text/event-stream" if stream else _JSON}
        if key:
            headers["authorization"] = f"Bearer {key}"
        return headers

    async def post_raw(self, body: bytes, client_key: str | None) -> Reply:
        """POST a Chat Completions body; a non-2xx answer raises, named for this provider."""
        try:
            reply = await self.client.post(self.chat_url, self.headers(client_key, False), body, self.timeouts)
        except (UpstreamError, UpstreamTimeout) as exc:
            raise self.transport_error(exc) from exc
        if reply.status >= 300:
            raise self.status_error(reply.status, reply.body, *dialect.upstream_error_message(reply.body))
        return reply

    async def stream_raw(self, body: bytes, client_key: str | None) -> StreamReply:
        """Open a streamed Chat Completions call; returns once the status is known."""
        try:
            reply = await self.client.stream(self.chat_url, self.headers(client_key, True), body, self.timeouts)
        except (UpstreamError, UpstreamTimeout) as exc:
            raise self.transport_error(exc) from exc
        if reply.status >= 300:
            try:
                data = await reply.read()
            except (UpstreamError, UpstreamTimeout):
                data = b""
            finally:
                await reply.aclose()
            raise self.status_error(reply.status, data, *dialect.upstream_error_message(data))
        return reply
