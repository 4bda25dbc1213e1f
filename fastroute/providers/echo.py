"""The built-in ``echo`` provider: answers with the last user message.

Needs no network and no key, so a fresh machine has something to talk to.
Streams word by word; usage counts whitespace-separated words as tokens.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator

from fastroute.canonical import ChatRequest, ChatResponse, StreamEvent, TextPart, Usage
from fastroute.providers.base import Provider

_WORDS = re.compile(r"\s*\S+")


def count_tokens(text: str) -> int:
    return len(text.split())


class EchoProvider(Provider):
    passthrough_dialect = None

    def models(self) -> list[str]:
        return list(self.config.models) or ["echo"]

    def capabilities(self, model: str) -> frozenset[str] | None:
        return frozenset({"vision", "tools"})  # it echoes text whatever it is given

    def _usage(self, request: ChatRequest, reply: str) -> Usage:
        prompt = sum(count_tokens(m.text()) for m in request.messages) + count_tokens(request.system or "")
        return Usage(input_tokens=prompt, output_tokens=count_tokens(reply))

    @staticmethod
    def _id() -> str:
        return "chatcmpl-echo-" + os.urandom(8).hex()

    async def send(self, request: ChatRequest, client_key: str | None = None) -> ChatResponse:
        reply = request.last_user_text()
        return ChatResponse(id=self._id(), model=request.model, content=[TextPart(reply)], stop_reason="stop",
                            usage=self._usage(request, reply), created=int(time.time()))

    async def open_stream(self, request: ChatRequest, client_key: str | None = None) -> AsyncIterator[StreamEvent]:
        return self._stream(request)

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        reply = request.last_user_text()
        yield StreamEvent("start", id=self._id(), model=request.model)
        for word in _WORDS.findall(reply):
            yield StreamEvent("text", text=word)
        yield StreamEvent("stop", stop_reason="stop")
        yield StreamEvent("usage", usage=self._usage(request, reply))
