"""Live model discovery: what local servers serve, refreshed in the background.

``ollama`` providers via ``/api/tags`` and ``/api/show`` (capabilities vision,
tools and thinking — ``reasoning`` here —, and ``coding`` inferred from the name and family); ``openai``-format
servers (llama.cpp, vLLM, LM Studio) via ``/v1/models``.  Discovery uses httpx
(convenience over microseconds: it is off the request path).  A provider that
does not answer keeps its last known list and is marked unreachable.

Every call carries the provider's configured key as its chat calls carry it
(:meth:`~fastroute.providers.http.HTTPProvider.own_auth_headers`), follows no
redirect (the key would go along: a ``3xx`` is a failed lookup) and takes no
proxy from the environment.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any


from fastroute.config import Config, DiscoverRule
from fastroute.providers import Provider
from fastroute.providers.http import HTTPProvider
from fastroute.routing.model_names import looks_like_coder, looks_like_reasoner


if TYPE_CHECKING:  # httpx (7 MB with what it brings) is imported when something is discovered
    import httpx

log = logging.getLogger("fastroute.discovery")

#: models kept of one provider's list: a longer list is cut (said in the log), so a server that
#: lists a huge catalogue cannot grow the model list, the names routing knows and the metric labels
MAX_MODELS = 5000


def discoverable(config: Config, providers: dict[str, Provider]) -> list[HTTPProvider]:
    """Providers with ``discover = true`` or named by a ``discover`` rule."""
    named = {r.provider for r in config.routers if isinstance(r, DiscoverRule)}
    return [p for p in providers.values()
            if (p.config.discover or p.name in named) and p.format in ("ollama", "openai")
            and isinstance(p, HTTPProvider)]


def infer_capabilities(name: str, family: str = "", reported: list[str] | None = None) -> frozenset[str]:
    caps = {c for c in reported or () if c in ("vision", "tools")}
    if "thinking" in (reported or ()) or looks_like_reasoner(name):  # "thinking": Ollama's word for it
        caps.add("reasoning")
    if looks_like_coder(name, family):
        caps.add("coding")
    return frozenset(caps)


def _capped(provider: HTTPProvider, listed: Any) -> list[Any]:
    """At most MAX_MODELS of a provider's listed models (said once, when its list is first cut)."""
    if not isinstance(listed, list):
        raise TypeError("the model list is not a list")
    if len(listed) > MAX_MODELS:
        if len(provider.discovered) < MAX_MODELS:
            log.warning("discovery: provider %r lists %d models; keeping the first %d", provider.name,
                        len(listed), MAX_MODELS)
        return listed[:MAX_MODELS]
    return listed


async def discover_one(client: httpx.AsyncClient, provider: HTTPProvider, timeout: float) -> None:
    import httpx

    base = provider.config.base_url.rstrip("/")
    headers = provider.own_auth_headers()
    try:
        if provider.format == "ollama":
            resp = await client.get(f"{base}/api/tags", headers=headers, timeout=timeout)
            resp.raise_for_status()
            found: dict[str, frozenset[str]] = {}
            listed = _capped(provider, resp.json().get("models", []))
            for m in listed:
                name = m.get("name") or m.get("model")
                if not name:
                    continue
                family = (m.get("details") or {}).get("family") or ""
                reported: list[str] = []
                try:
                    show = await client.post(f"{base}/api/show", json={"model": name}, headers=headers,
                                             timeout=timeout)
                    if show.status_code == 200:
                        reported = show.json().get("capabilities") or []
                except httpx.HTTPError:
                    pass
                found[name] = infer_capabilities(name, family, reported)
        else:
            resp = await client.get(f"{base}/models", headers=headers, timeout=timeout)
            resp.raise_for_status()
            found = {m["id"]: infer_capabilities(m["id"]) for m in _capped(provider, resp.json().get("data", []))
                     if isinstance(m, dict) and m.get("id")}
    except (httpx.HTTPError, ValueError, AttributeError, KeyError, TypeError) as exc:
        if provider.reachable:
            why = type(exc).__name__
            if isinstance(exc, httpx.HTTPStatusError):  # the status alone: a Location may carry secrets
                status = exc.response.status_code
                why = f"HTTP {status}" + (", a redirect, not followed" if 300 <= status < 400 else "")
            log.warning("discovery: provider %r did not answer (%s); keeping its last %d model(s)",
                        provider.name, why, len(provider.discovered))
        provider.reachable = False
        return
    provider.discovered = found
    provider.reachable = True


class Discovery:
    """Runs discovery once (bounded) at startup, then every ``interval_s`` in the background."""

    def __init__(self, config: Config, providers: dict[str, Provider]) -> None:
        self.config = config.discovery
        self.targets = discoverable(config, providers)
        self._task: asyncio.Task[Any] | None = None
        self._client: httpx.AsyncClient | None = None

    async def refresh(self) -> None:
        if self._client is None:
            import httpx

            # no redirect followed (the key would go along), no proxy from HTTP_PROXY & co.
            self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        await asyncio.gather(*(discover_one(self._client, p, self.config.timeout_s) for p in self.targets))

    async def start(self) -> None:
        if not self.targets:
            return
        try:
            await asyncio.wait_for(self.refresh(), timeout=self.config.timeout_s * 2)
        except asyncio.TimeoutError:
            log.warning("discovery: first refresh took too long; going on, it continues in the background")
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.interval_s)
            try:
                await self.refresh()
            except Exception:  # never let the loop die
                log.exception("discovery refresh failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
