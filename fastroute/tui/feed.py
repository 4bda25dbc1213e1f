"""Reading ``/dashboard/events`` from a running fastroute, reconnecting when it goes away."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson

from fastroute._speedups import SSEDecoder


class FeedRefused(Exception):
    """The server answered, and trying again will not help: a missing or wrong key, or no feed there."""


def refusal(url: str, status: int, api_key: str | None) -> str | None:
    """Why ``url``'s answer ``status`` is final, or None when it is worth trying again."""
    if status in (401, 403):
        if api_key:
            return f"{url} refused the API key (HTTP {status})"
        return f"{url} requires its API key: pass --api-key or set $FASTROUTE_API_KEY"
    if status == 404:
        return f"{url} has no event feed at /dashboard/events (is it a fastroute server?)"
    return None


async def events(url: str, api_key: str | None = None, on_status: Callable[[str], None] | None = None,
                 retry_s: float = 1.0, stop_after: int | None = None) -> AsyncIterator[dict[str, Any]]:
    """Yield every event from ``url`` forever; on a lost connection, say so and try again.

    Raises :class:`FeedRefused` when the server's answer will not change by retrying.
    """
    import asyncio

    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    status = on_status or (lambda s: None)
    seen = 0
    connected_once = False
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=60.0), trust_env=False) as client:
        while True:
            try:
                async with client.stream("GET", url.rstrip("/") + "/dashboard/events", headers=headers) as resp:
                    if resp.status_code != 200:
                        final = refusal(url, resp.status_code, api_key)
                        if final is not None:
                            raise FeedRefused(final)
                        status(f"{url} answered HTTP {resp.status_code}; retrying every {retry_s:g} s")
                        await asyncio.sleep(retry_s)
                        continue
                    status(f"connected to {url}" if not connected_once else f"reconnected to {url}")
                    connected_once = True
                    decoder = SSEDecoder()
                    async for chunk in resp.aiter_raw():
                        for ev in decoder.feed(chunk):
                            try:
                                event = orjson.loads(ev.data)
                            except orjson.JSONDecodeError:
                                continue
                            yield event
                            seen += 1
                            if stop_after is not None and seen >= stop_after:
                                return
                status(f"{url} closed the feed; reconnecting")
            except httpx.HTTPError:
                status(f"cannot reach {url}; retrying every {retry_s:g} s")
            await asyncio.sleep(retry_s)
