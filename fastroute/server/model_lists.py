"""The model list in each dialect's shape: OpenAI's ``/v1/models``, Anthropic's (when the request
carries ``anthropic-version``) and Ollama's ``/api/tags``.  What is listed is
:class:`fastroute.routing.catalogue.Catalogue`'s to say; this only draws it."""

from __future__ import annotations

from typing import Any

from fastroute.errors import BadRequest
from fastroute.routing.catalogue import Listed

EPOCH = "1970-01-01T00:00:00Z"
#: Anthropic's bounds for ``limit``
MAX_LIMIT = 1000


def openai_model(m: Listed) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": m.id, "object": "model", "created": 0, "owned_by": m.provider}
    if m.capabilities is not None:  # declared or discovered: vision, tools, coding
        entry["capabilities"] = sorted(m.capabilities)
    return entry


def openai_list(models: list[Listed]) -> dict[str, Any]:
    return {"object": "list", "data": [openai_model(m) for m in models]}


def anthropic_model(m: Listed) -> dict[str, Any]:
    return {"type": "model", "id": m.id, "display_name": m.id, "created_at": EPOCH}


def anthropic_list(models: list[Listed], query: dict[str, list[str]]) -> dict[str, Any]:
    """One page, as Anthropic pages: ``after_id`` / ``before_id`` cursors and ``limit``.
    Without ``limit`` the page holds every model (Anthropic's default is 20; a client that
    does not page still sees them all)."""
    after, before, limit = _one(query, "after_id"), _one(query, "before_id"), _one(query, "limit")
    ids = [m.id for m in models]
    start, end = 0, len(models)
    for key, cursor in (("after_id", after), ("before_id", before)):
        if cursor is not None and cursor not in ids:
            raise BadRequest(f"{key}: {cursor!r} is not a listed model", param=key)
    if after is not None:
        start = ids.index(after) + 1
    if before is not None:
        end = ids.index(before)
    if limit is not None:
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
            raise BadRequest(f"limit: must be an integer from 1 to {MAX_LIMIT}, got {limit!r}", param="limit")
        n = int(limit)
        if before is not None and after is None:  # the page just before the cursor
            start = max(start, end - n)
        else:
            end = min(end, start + n)
    page = models[start:end] if start < end else []
    more = (start > 0) if before is not None and after is None else (end < len(models))
    return {"data": [anthropic_model(m) for m in page], "has_more": more,
            "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None}


def ollama_tags(models: list[Listed]) -> dict[str, Any]:
    return {"models": [{"name": m.id, "model": m.id, "modified_at": EPOCH, "size": 0, "digest": "",
                        "details": {"format": "", "family": m.provider, "families": None, "parameter_size": "",
                                    "quantization_level": ""}} for m in models]}


def _one(query: dict[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None
