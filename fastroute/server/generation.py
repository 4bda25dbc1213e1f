"""What a worker builds from a config, apart from what outlives it.

A worker holds two kinds of parts:

- :class:`Lasting`: built once at startup and kept for the worker's life, whatever config is
  loaded later: the event bus, the metrics, the request log, the console, the audit log, the
  Responses state, the key ring and its store, the rate-limit counters, the exact cache, the
  telemetry (its exporters), the in-flight count.
- :class:`Generation`: everything built from one config: the upstream client, the providers,
  their health, the router, the classifiers and plugins (in the pipeline), the pricing (in the
  pipeline's recorder), discovery, the model catalogue.  Startup builds the first one and each
  reload (:mod:`fastroute.server.reload`) builds the next, both with :func:`build_generation`.

A request takes the generation's pipeline once, when it starts, and keeps it to its end (a stream
to its last byte): a reload never changes a request under way.  A generation replaced by a reload
is retired: its discovery stops at once, its upstream client is closed once its last request has
ended (or after :data:`RETIRE_GRACE_S` at the latest).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from fastroute.config import Config
from fastroute.governance.keys import KeyRing
from fastroute.pipeline import Flight, Pipeline
from fastroute.pricing import Pricing
from fastroute.providers import Provider, build_providers
from fastroute.providers.transport import make_client
from fastroute.recording.console import ConsoleLog
from fastroute.recording.events import EventBus
from fastroute.recording.log import RequestLog
from fastroute.recording.metrics import Metrics
from fastroute.recording.recorder import Recorder
from fastroute.routing import Router
from fastroute.routing.catalogue import Catalogue
from fastroute.routing.discovery import Discovery
from fastroute.routing.health import Health

log = logging.getLogger("fastroute.reload")

#: the longest a retired generation's upstream client stays open for requests still under way
RETIRE_GRACE_S = 3600.0
#: how often a retired generation looks whether its last request has ended
RETIRE_POLL_S = 0.5


@dataclass(slots=True)
class Lasting:
    """The parts of a worker that every generation shares and no reload rebuilds."""

    bus: EventBus
    metrics: Metrics
    request_log: RequestLog | None
    console: ConsoleLog
    audit: Any
    keys: KeyRing
    #: per client dialect, the state it keeps across requests (the pipeline's ``states``)
    states: dict[str, Any]
    #: governance.limiter.Limiter, None: nothing is limited (a reload may open it)
    limiter: Any = None
    #: the exact cache (fastroute.cache.ExactCache), None: off
    cache: Any = None
    #: spans and OTLP metrics (fastroute.telemetry.otel.Telemetry), None: [telemetry] off
    telemetry: Any = None
    flight: Flight = field(default_factory=Flight)


@dataclass(slots=True)
class Generation:
    number: int
    config: Config
    client: Any
    providers: dict[str, Provider]
    health: Health
    router: Router
    pipeline: Pipeline
    discovery: Discovery
    catalogue: Catalogue
    closed: bool = False

    async def start(self) -> None:
        await self.discovery.start()  # bounded; then it refreshes in the background

    async def retire(self, grace_s: float = RETIRE_GRACE_S) -> None:
        """Replaced: stop discovering, and close the upstream client once nothing uses it."""
        await self.discovery.stop()
        deadline = time.monotonic() + grace_s
        while self.pipeline.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(RETIRE_POLL_S)
        if self.pipeline.in_flight:
            log.warning("reload: generation %d still had %d request(s) in flight after %.0f s; closing its "
                        "upstream connections", self.number, self.pipeline.in_flight, grace_s)
        await self.pipeline.settled()
        await self.close()

    async def close(self) -> None:
        """Discovery and the upstream client closed (once: the stop closes what a retirement left)."""
        if not self.closed:
            self.closed = True
            await self.discovery.stop()
            await self.client.aclose()


def build_generation(config: Config, lasting: Lasting, number: int) -> Generation:
    """Everything built from ``config`` (already validated, ``strict`` providers dropped)."""
    client = make_client(config.server.upstream_client)
    providers = build_providers(config, client)
    health = Health(config.failover)
    pricing = Pricing(config.pricing, {p.name: p.cost_per_1m_tokens for p in config.providers})
    recorder = Recorder(lasting.bus, lasting.metrics, lasting.request_log, pricing, lasting.console, lasting.audit)
    telemetry = lasting.telemetry
    if telemetry is not None:
        recorder.telemetry = telemetry
        telemetry.formats = {p.name: p.format for p in config.providers}
        for provider in providers.values():
            provider.trace_headers = telemetry.inject
    router = Router(config, providers, health.available, steady=health.steady)
    pipeline = Pipeline(config, providers, router, health, recorder, states=lasting.states,
                        limiter=lasting.limiter, cache=lasting.cache, telemetry=telemetry, flight=lasting.flight)
    return Generation(number, config, client, providers, health, router, pipeline, Discovery(config, providers),
                      Catalogue(config, providers))
