"""What every provider has: its config, its key, its timeouts, and error mapping."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urljoin, urlsplit

from fastroute.canonical import StreamEvent
from fastroute.config import ProviderConfig
from fastroute.errors import ProviderStatusError, UpstreamError, UpstreamTimeout
from fastroute.providers.transport import StreamReply, Timeouts, UpstreamClient


class EventStream:
    """A provider's streamed answer as canonical events, owning the upstream reply: :meth:`aclose`
    releases it whether or not the events were ever read (an async generator never started never
    runs its ``finally``)."""

    __slots__ = ("_events", "_reply")

    def __init__(self, events: AsyncIterator[StreamEvent], reply: StreamReply) -> None:
        self._events = events
        self._reply = reply

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._events

    async def aclose(self) -> None:
        try:
            await self._events.aclose()  # type: ignore[attr-defined]
        finally:
            await self._reply.aclose()


class Provider:
    """One configured upstream.  Subclasses speak one provider dialect."""

    #: the client dialect whose bodies this provider accepts as they are (fast path)
    passthrough_dialect: str | None = None
    #: how many times any provider's ``discovered`` was replaced: what was worked out from the
    #: providers' lists (routes, metric labels) holds while this stays the same
    lists_changed = 0

    def __init__(self, config: ProviderConfig, client: UpstreamClient | None) -> None:
        self.config = config
        self.name = config.name
        self.format = config.format
        self.client = client
        self.timeouts = Timeouts(connect=config.connect_timeout, read=config.read_timeout)
        self._discovered: dict[str, frozenset[str]] = {}
        #: False when the last discovery call failed (the last known list is kept)
        self.reachable = True
        #: puts the current span's ``traceparent`` into a request's headers ([telemetry] on); None: off
        self.trace_headers: Any = None

    @property
    def discovered(self) -> dict[str, frozenset[str]]:
        """Models found by discovery, with what each can do (replaced whole, never changed in place)."""
        return self._discovered

    @discovered.setter
    def discovered(self, found: dict[str, frozenset[str]]) -> None:
        self._discovered = found
        Provider.lists_changed += 1

    def api_key(self) -> str | None:
        """The provider's key, read from the environment now (never cached, never logged)."""
        env = self.config.api_key_env
        return os.environ.get(env) if env else None

    def models(self) -> list[str]:
        """What this provider serves: configured models, then discovered ones."""
        listed = list(self.config.models)
        return listed + [m for m in self.discovered if m not in listed]

    def capabilities(self, model: str) -> frozenset[str] | None:
        """What ``model`` can do; None when nobody said (then it is assumed able)."""
        found = self.discovered.get(model)
        if found is not None:
            return found
        return frozenset(self.config.capabilities) if self.config.capabilities else None

    # errors ---------------------------------------------------------------

    def status_error(self, status: int, body: bytes, message: str, upstream_type: str | None) -> Exception:
        """The error for a non-2xx answer: a 4xx is the provider's own, a 5xx is a 502."""
        if 400 <= status < 500:
            return ProviderStatusError(self.name, status, message, body, upstream_type, self.passthrough_dialect)
        return UpstreamError(f"provider '{self.name}' failed: HTTP {status}: {message}", provider=self.name)

    def redirect_error(self, status: int, location: str | None, url: str) -> UpstreamError:
        """The 502 for a 3xx answer (never followed: the key would go along), naming where it pointed
        by its origin alone: a Location's path and query may carry secrets."""
        to = f"a redirect to {redirect_origin(location, url)}" if location else "a redirect without a Location"
        return UpstreamError(f"provider '{self.name}' answered HTTP {status}, {to}; fastroute does not follow "
                             "redirects (the provider's key would go along): set its base_url to the address "
                             "that answers", provider=self.name)

    def transport_error(self, exc: UpstreamError) -> UpstreamError:
        """Name the provider in a transport error (never its key)."""
        if isinstance(exc, UpstreamTimeout):
            limit = self.timeouts.connect if exc.phase == "connect" else self.timeouts.read
            what = "connection" if exc.phase == "connect" else "data"
            return UpstreamTimeout(f"provider '{self.name}' timed out: no {what} within {limit:g} s "
                                   f"({exc.phase}_timeout)",
                                   phase=exc.phase, provider=self.name)
        return type(exc)(f"provider '{self.name}' at {self.config.base_url}: {exc.message}", provider=self.name)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "format": self.format, "base_url": self.config.base_url,
                "key": f"${self.config.api_key_env}" if self.config.api_key_env else None}


_HOST = re.compile(r"[A-Za-z0-9._~%-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")


def redirect_origin(location: str, url: str) -> str:
    """``scheme://host[:port]`` of a ``Location`` (resolved against ``url``); no user, path or query."""
    try:
        parts = urlsplit(urljoin(url, location.strip()))
        host, port = parts.hostname, parts.port
    except ValueError:
        return "an address that is not a URL"
    if parts.scheme not in ("http", "https") or not host:
        return "an address that is not an http(s) URL"
    if ":" in host:
        host = f"[{host}]"
    if not _HOST.fullmatch(host):
        return f"an {parts.scheme} address with an unreadable host"
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")
