"""Providers that speak Anthropic's Messages API."""

from __future__ import annotations

from collections.abc import Mapping

from fastroute.canonical import ChatRequest
from fastroute.formats import anthropic as dialect
from fastroute.providers.http import HTTPProvider
from fastroute.providers.transport import Reply

API_VERSION = "2023-06-01"
#: client headers that travel with a same-dialect request (the features the client asked for)
FORWARDED = ("anthropic-version", "anthropic-beta")
#: set in a same-dialect call's client headers when the client's URL carried the SDK's ``?beta=true``
BETA_QUERY = ":beta-query"


class AnthropicProvider(HTTPProvider):
    dialect = dialect

    def endpoint(self, base: str) -> str:
        return base + ("/messages" if base.endswith("/v1") else "/v1/messages")

    async def count_tokens_raw(self, body: bytes, client_key: str | None,
                               client_headers: Mapping[str, str] | None = None) -> Reply:
        """POST a count_tokens body to ``…/v1/messages/count_tokens``: same key, headers, ``?beta=true``
        and errors as a chat."""
        url = self.url + "/count_tokens"
        if client_headers and client_headers.get(BETA_QUERY):
            url += "?beta=true"
        return await self.post_raw(body, client_key, client_headers, url=url)

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-api-key": key}

    def url_for(self, client_headers: Mapping[str, str] | None) -> str:
        return self.url + "?beta=true" if client_headers and client_headers.get(BETA_QUERY) else self.url

    def headers(self, client_key: str | None, stream: bool, client_headers: Mapping[str, str] | None = None,
                request: ChatRequest | None = None) -> dict[str, str]:
        headers = super().headers(client_key, stream, client_headers, request)
        headers["anthropic-version"] = API_VERSION
        for name in FORWARDED:
            if client_headers and client_headers.get(name):
                headers[name] = client_headers[name]
        if request is not None:  # a translated request: the betas its fields need
            needed = [beta for beta, wanted in (
                (dialect.TASK_BUDGET_BETA, request.task_budget is not None),
                # rendered as system messages in place only for a client of this dialect, which asked for it
                (dialect.MID_CONVERSATION_SYSTEM_BETA,
                 request.source == dialect.NAME and any(m.role == "system" for m in request.messages)),
            ) if wanted]
            betas = [b for b in headers.get("anthropic-beta", "").split(",") if b]
            if any(b not in betas for b in needed):
                headers["anthropic-beta"] = ",".join([*betas, *(b for b in needed if b not in betas)])
        return headers
