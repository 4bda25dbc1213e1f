"""``response-healing``: repair a reply that should be JSON but is not quite.

Strips Markdown code fences and prose around the JSON, trailing commas, and
closes what a token limit cut off.  The reply is replaced only when it was not
valid JSON and the repair is.
"""

from __future__ import annotations

from typing import Any

import orjson

from fastroute.canonical import TextPart
from fastroute.plugins import MODIFIED, Plugin, PluginContext

def heal_json(text: str) -> str | None:
    """A valid-JSON version of ``text``, or None when no repair gives one."""
    text = text.strip()
    if text.startswith("```"):
        text = text[3:]
        if text.startswith("json"):
            text = text[4:]
        end = text.rfind("```")
        text = (text[:end] if end >= 0 else text).strip()
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    ends = [i for i in (text.rfind("}"), text.rfind("]")) if i >= 0]
    if starts:
        start = min(starts)
        end = max(ends) if ends else -1
        text = text[start:end + 1] if end >= start else text[start:]
    candidate = _balance(_remove_trailing_commas(text))
    try:
        orjson.loads(candidate)
    except orjson.JSONDecodeError:
        return None
    return candidate


def _remove_trailing_commas(text: str) -> str:
    """Drop commas that only whitespace separates from a closing ``}`` or ``]`` (outside strings)."""
    out: list[str] = []
    in_string = escaped = False
    n = len(text)
    for i, c in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == ",":
            j = i + 1
            while j < n and text[j].isspace():
                j += 1
            if j < n and text[j] in "}]":
                continue
        out.append(c)
    return "".join(out)


def _balance(text: str) -> str:
    stack: list[str] = []
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
            continue
        if c == '"':
            in_string = True
        elif c == "{":
            stack.append("}")
        elif c == "[":
            stack.append("]")
        elif c in "}]" and stack and stack[-1] == c:
            stack.pop()
    return text + ('"' if in_string else "") + "".join(reversed(stack))


class ResponseHealingPlugin(Plugin):
    id = "response-healing"

    async def post_response(self, ctx: PluginContext) -> Any:
        resp = ctx.response
        if resp is None or resp.tool_calls:
            return None
        text = resp.text()
        try:
            orjson.loads(text)
            return None  # already valid
        except orjson.JSONDecodeError:
            pass
        healed = heal_json(text)
        if healed is None:
            return None  # prose, or beyond repair: left as it is
        others = [p for p in resp.content if not isinstance(p, TextPart)]
        resp.content = [*others, TextPart(healed)]
        return MODIFIED
