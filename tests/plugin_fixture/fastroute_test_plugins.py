"""Third-party plugins for the tests, found through the ``fastroute.plugins`` entry points
(``fastroute_test_plugins-0.1.dist-info/entry_points.txt`` beside this file)."""

from __future__ import annotations

from typing import Any

from fastroute.canonical import ChatResponse, TextPart, Usage
from fastroute.plugins import MODIFIED, Plugin, PluginContext, Stop


class CannedAnswer(Plugin):
    """Answers "pong" to "ping" itself, without any provider."""

    id = "canned"

    async def on_start(self, ctx: PluginContext) -> Any:
        last = ctx.request.last_user_text()
        if last.strip().lower() == "ping":
            ctx.response = ChatResponse(id="canned-1", model="canned", content=[TextPart("pong")],
                                        usage=Usage(input_tokens=1, output_tokens=1))
            return Stop("canned answer")
        return None


class Shouty(Plugin):
    """Upper-cases the last user message before it goes out (a request change)."""

    id = "shouty"

    async def pre_request(self, ctx: PluginContext) -> Any:
        for message in reversed(ctx.request.messages):
            if message.role == "user":
                message.content = [TextPart(p.text.upper()) if isinstance(p, TextPart) else p for p in message.content]
                return MODIFIED
        return None


class Broken(Plugin):
    id = "broken"

    async def pre_request(self, ctx: PluginContext) -> Any:
        raise RuntimeError("this plugin always fails")


class Tally(Plugin):
    """Writes one line per finished request to the file named in its settings: how it ended."""

    id = "tally"

    async def on_end(self, ctx: PluginContext) -> None:
        answer = ctx.response.text() if ctx.response is not None else ""
        with open(ctx.settings["path"], "a", encoding="utf-8") as out:
            out.write(f"{ctx.error or 'ok'}|{answer}\n")
