"""Prometheus metrics for ``GET /metrics`` (prometheus-client).

With several workers, ``PROMETHEUS_MULTIPROC_DIR`` (set by the runner) makes
every worker's counters add up in whichever worker answers the scrape.

Labels carry only the names the routing table knows (:class:`LabelNames`): a model
name a client made up is counted as ``other``, so no client can grow the series --
memory, and the size of ``/metrics``, which needs no key -- by asking for new names.
Client keys are labelled by their configured name (never a secret), at most
:data:`MAX_KEY_LABELS` of them: the configured keys first, in the config's order, then
whichever others come first (keys made at run time); the rest are ``other``.  The bound
is each worker's: with several, a key made at run time may have its label in one worker
and be ``other`` in another (the configured keys are labelled alike in all).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from fastroute.governance.keys import SERVER_KEY_NAME
from fastroute.providers.base import Provider
from fastroute.routing.catalogue import candidate_names

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
#: the label of every provider or model name the routing table does not know
OTHER = "other"
#: provider labels that name no provider: refused before routing, answered by a plugin
NOT_PROVIDERS = ("none", "plugin")
#: the key label of a request no configured key was presented for (no key is required, or refused before)
NO_KEY = "none"
#: distinct key names labelled as themselves; every further one is ``other``
MAX_KEY_LABELS = 100
#: the ``limit`` label of a refusal, by the limit that refused (``governance.limiter.Verdict.limit``)
LIMIT_LABELS = {"requests_per_minute": "requests_per_minute", "tokens_per_minute": "tokens_per_minute",
                "budget_usd": "budget"}


class LabelNames:
    """Which names a label may carry: the configured providers, and the models the routing table
    knows -- every provider's declared and discovered models, the names rules give
    (:func:`~fastroute.routing.catalogue.candidate_names`) and whatever ``GET /v1/models`` lists.

    A known name costs one set lookup, an unknown one a comparison more: the sets are built again
    only when discovery replaced a provider's ``discovered`` list since.  Without a
    catalogue no provider and no model is known.

    Keys (:meth:`key`): the catalogue's config names them (``[[keys]]``, and ``server`` for
    ``[server] api_key_env``); up to :data:`MAX_KEY_LABELS` names are labelled, the configured
    ones first, then the first others seen.
    """

    def __init__(self, catalogue: Any = None) -> None:
        self._catalogue = catalogue
        self._seen = -1  # Provider.lists_changed when the sets were built
        self.providers: frozenset[str] = frozenset(NOT_PROVIDERS)
        self.models: frozenset[str] = frozenset()
        #: the key names labelled as themselves (grows up to MAX_KEY_LABELS, never shrinks)
        self.keys: set[str] = set()
        config = getattr(catalogue, "config", None)
        if config is not None:
            configured = ([SERVER_KEY_NAME] if config.server.api_key_env else []) + [k.name for k in config.keys]
            for name in configured:
                if len(self.keys) >= MAX_KEY_LABELS:
                    break
                self.keys.add(name)

    def provider(self, name: str) -> str:
        if name in self.providers or (self._refresh() and name in self.providers):
            return name
        return OTHER

    def model(self, name: str) -> str:
        if name in self.models or (self._refresh() and name in self.models):
            return name
        return OTHER

    def key(self, name: str | None) -> str:
        """The label of a key name: itself while fewer than MAX_KEY_LABELS are labelled, else ``other``;
        ``none`` when the request had no configured key."""
        if name is None:
            return NO_KEY
        keys = self.keys
        if name in keys:
            return name
        if len(keys) < MAX_KEY_LABELS:
            keys.add(name)
            return name
        return OTHER

    def _refresh(self) -> bool:
        """Build the sets again when a provider's model list was replaced since the last time
        (``Provider.lists_changed``: one comparison, whatever the number of providers); True when
        one was."""
        catalogue = self._catalogue
        if catalogue is None or self._seen == Provider.lists_changed:
            return False
        self._seen = Provider.lists_changed
        listed = catalogue.models()
        self.providers = frozenset((*catalogue.providers, *NOT_PROVIDERS))
        self.models = frozenset((*candidate_names(catalogue.config, catalogue.providers), *(m.id for m in listed)))
        return True


#: bound label sets kept at most (the labels themselves are bounded by LabelNames)
MAX_SERIES = 4096


class _Series:
    """One (provider, model, status)'s children of the metrics a request counts.  The time to the
    first token and failovers are bound when first counted, so no empty series shows up for them
    in ``/metrics`` (streams and failovers are not every request's); the cost per key label, when
    first counted (:meth:`bind_cost`, then ``costs[key]``)."""

    __slots__ = ("_failovers", "_m", "_ttft", "costs", "duration", "labels", "requests", "tokens_in", "tokens_out")

    def __init__(self, m: Metrics, provider: str, model: str, status: str) -> None:
        self._m = m
        self.labels = (provider, model)
        self.requests = m.requests.labels(provider, model, status)
        self.duration = m.duration.labels(provider, model)
        self.tokens_in = m.tokens.labels(provider, model, "in")
        self.tokens_out = m.tokens.labels(provider, model, "out")
        #: key label -> the cost counter's child of (provider, model, key)
        self.costs: dict[str, Any] = {}
        self._ttft: Any = None
        self._failovers: Any = None

    @property
    def ttft(self) -> Any:
        if self._ttft is None:
            self._ttft = self._m.ttft.labels(*self.labels)
        return self._ttft

    @property
    def failovers(self) -> Any:
        if self._failovers is None:
            self._failovers = self._m.failovers.labels(*self.labels)
        return self._failovers

    def bind_cost(self, key: str) -> Any:
        child = self.costs[key] = self._m.cost.labels(*self.labels, key)
        return child


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, names: LabelNames | None = None) -> None:
        #: which provider and model names become labels (:meth:`label_only`)
        self.names = names or LabelNames()
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        reg = None if self.multiprocess else self.registry  # multiprocess: values live in the shared files
        labels = ("provider", "model")
        self.requests = Counter("fastroute_requests_total", "Requests answered", (*labels, "status"), registry=reg)
        self.duration = Histogram("fastroute_request_duration_seconds", "Time to the end of the answer", labels,
                                  buckets=_LATENCY_BUCKETS, registry=reg)
        self.ttft = Histogram("fastroute_time_to_first_token_seconds", "Time to the first byte of a stream", labels,
                              buckets=_LATENCY_BUCKETS, registry=reg)
        self.tokens = Counter("fastroute_tokens_total", "Tokens in and out", (*labels, "direction"), registry=reg)
        self.in_flight = Gauge("fastroute_in_flight_requests", "Requests being answered", registry=reg,
                               multiprocess_mode="livesum")
        self.upstream_errors = Counter("fastroute_upstream_errors_total", "Failed upstream attempts",
                                       ("provider", "status"), registry=reg)
        self.failovers = Counter("fastroute_failovers_total", "Requests answered by a later provider of the chain",
                                 labels, registry=reg)
        self.cost = Counter("fastroute_cost_usd_total", "What finished requests cost, in USD, from their usage",
                            (*labels, "key"), registry=reg)
        self.key_tokens = Counter("fastroute_key_tokens_total", "Tokens in and out per client key",
                                  ("key", "direction"), registry=reg)
        self.rate_limited = Counter("fastroute_rate_limited_total", "Requests refused by a key's rate limit or budget",
                                    ("key", "limit"), registry=reg)
        #: the exact cache's answers ([cache]), per provider label
        self.cache_hits = Counter("fastroute_cache_hits_total", "Requests answered by the exact cache", ("provider",),
                                  registry=reg)
        self.cache_misses = Counter("fastroute_cache_misses_total", "Requests looked up in the exact cache and not found",
                                    ("provider",), registry=reg)
        self._following = False
        #: bound children per (provider, model, status) label values (:meth:`_bind`)
        self._series: dict[tuple[str, str, int], _Series] = {}
        #: per key label (bounded by LabelNames.key), its (in, out) children of key_tokens
        self._key_tokens: dict[str, tuple[Any, Any]] = {}
        #: per key label, its children of rate_limited per limit label
        self._limited: dict[str, dict[str, Any]] = {}
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(self.registry)

    def follow_in_flight(self, count: Callable[[], int]) -> None:
        """Read the in-flight gauge from ``count`` when scraped, instead of setting it on every
        request.  One process only: with several, each worker's value lives in the shared files."""
        if not self.multiprocess:
            self.in_flight.set_function(count)
            self._following = True

    def set_in_flight(self, count: int) -> None:
        if not self._following:
            self.in_flight.set(count)

    def label_only(self, catalogue: Any) -> None:
        """Label only the providers and models ``catalogue`` knows (the server's
        :class:`~fastroute.routing.catalogue.Catalogue`); every other name is ``other``."""
        self.names = LabelNames(catalogue)

    def observe(self, entry: dict[str, Any]) -> None:
        """Count one finished request (a ``complete`` record)."""
        names = self.names
        provider = names.provider(entry.get("provider") or "none")
        model = names.model(entry.get("sent_model") or entry.get("requested_model") or "")
        status = entry.get("status", 0)
        series = self._series.get((provider, model, status))
        if series is None:
            series = self._bind(provider, model, status)
        series.requests.inc()
        if entry.get("duration_ms") is not None:
            series.duration.observe(entry["duration_ms"] / 1000.0)
        if entry.get("ttft_ms") is not None:
            series.ttft.observe(entry["ttft_ms"] / 1000.0)
        usage = entry.get("usage")
        key_name = entry.get("key_name")
        key = names.key(key_name)
        if usage:
            tokens_in, tokens_out = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
            series.tokens_in.inc(tokens_in)
            series.tokens_out.inc(tokens_out)
            if key_name is not None:  # no configured key: fastroute_tokens_total says it all
                by_key = self._key_tokens.get(key)
                if by_key is None:
                    by_key = self._key_tokens[key] = (self.key_tokens.labels(key, "in"),
                                                      self.key_tokens.labels(key, "out"))
                by_key[0].inc(tokens_in)
                by_key[1].inc(tokens_out)
        micros = entry.get("cost_micros")
        if micros is not None:
            cost = series.costs.get(key)
            if cost is None:  # bound at 0 too: the model is priced, and free
                cost = series.bind_cost(key)
            if micros:
                cost.inc(micros / 1_000_000)
        limit = entry.get("limited_by")
        if limit is not None:
            self._refused(key, LIMIT_LABELS.get(limit, OTHER))
        cache = entry.get("cache")
        if cache is not None and cache != "bypass":
            (self.cache_hits if cache == "hit" else self.cache_misses).labels(provider).inc()
        attempts = entry.get("attempts") or ()
        if len(attempts) > 1 or (attempts and attempts[0].get("error")):
            self._attempts(attempts, series, status)

    def _refused(self, key: str, limit: str) -> None:
        """A request refused by a key's limit (``limit``: the label of the one that did)."""
        by_limit = self._limited.get(key)
        if by_limit is None:
            by_limit = self._limited[key] = {}
        child = by_limit.get(limit)
        if child is None:
            child = by_limit[limit] = self.rate_limited.labels(key, limit)
        child.inc()

    def _attempts(self, attempts: Any, series: _Series, status: int) -> None:
        """Failed attempts and failovers: the rare part, labelled per call."""
        for a in attempts:
            if a.get("error"):
                failed = self.names.provider(a.get("provider") or "none")
                self.upstream_errors.labels(failed, str(a.get("status") or "")).inc()
        if len(attempts) > 1 and status == 200:
            series.failovers.inc()

    def _bind(self, provider: str, model: str, status: int) -> _Series:
        """The children of one (provider, model, status), bound once: ``labels()`` takes a lock and
        builds its key on every call (measured: 4 calls ~12 us of the 17 us a request cost)."""
        if len(self._series) >= MAX_SERIES:  # only names the routing table knows: a safety bound
            self._series.clear()
        series = self._series[(provider, model, status)] = _Series(self, provider, model, str(status))
        return series

    def render(self) -> bytes:
        return generate_latest(self.registry)
