"""The routing table: ``[[routers]]`` rules compiled once, tried top to bottom.

The per-request scan over the table runs in ``_speedups.RuleScanner`` (C, with
a Python twin): prefix and tag rules are tested there, and every other rule
type is judged here.  A rule that matches still passes when what it picks
cannot serve the request (the model lacks ``vision`` for images or ``tools``
for tools, or the provider's circuit breaker is open); no rule at all is a 400.
Each rule brings its failover chain (``fallbacks``, ``fallback_models``).

A route found is kept per (model, tags, needs) while what it was judged by holds:
``steady()`` (no circuit breaker open) and no provider's model list replaced since
(``Provider.lists_changed``).  Routes picked at random are never kept.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fastroute import _speedups
from fastroute._speedups._rules_py import OTHER, PREFIX, TAG
from fastroute.config import (
    Config, DiscoverRule, FallbackRule, LatencyRule, PrefixRule, PriceRule, RandomRule, TagRule, ThroughputRule,
)
from fastroute.errors import NoRoute, UpstreamError
from fastroute.providers.base import Provider


@dataclass(frozen=True, slots=True)
class Route:
    provider: str
    #: the model name sent upstream
    model: str
    #: index of the rule in [[routers]] that matched (-1: forced, e.g. by a plugin)
    rule: int
    #: what to try next, in order, if this one fails before the first byte
    fallbacks: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RouteQuery:
    model: str
    tags: frozenset[str] = frozenset()
    #: capabilities the request needs: "vision" (images), "tools"
    needs: frozenset[str] = frozenset()


@dataclass(slots=True)
class Verdict:
    """One rule's answer to a query: a route, or why not."""

    index: int
    type: str
    route: Route | None = None
    reason: str = ""
    #: the rule matched but what it picks is out of service (circuit breaker open)
    unavailable: bool = False
    details: dict[str, Any] = field(default_factory=dict)


#: routes kept at most (past it the cache starts again empty)
MAX_ROUTES = 4096


class Router:
    """The compiled routing table over the providers it routes to."""

    def __init__(self, config: Config, providers: dict[str, Any] | None = None,
                 available: Callable[[str], bool] | None = None, scanner: type | None = None,
                 steady: Callable[[], bool] | None = None) -> None:
        self.config = config
        #: may routes be kept now? (None: never; the server passes Health.steady)
        self.steady = steady
        self._routes: dict[tuple[str, tuple[str, ...], Any], Route] = {}
        self._lists = -1  # Provider.lists_changed when the kept routes were found
        self.rules = config.routers
        self.providers = providers or {}
        self.available = available or (lambda name: True)
        kinds, keys = [], []
        for rule in self.rules:
            if isinstance(rule, PrefixRule):
                kinds.append(PREFIX)
                keys.append(rule.model_prefix)
            elif isinstance(rule, TagRule):
                kinds.append(TAG)
                keys.append(rule.tag)
            else:
                kinds.append(OTHER)
                keys.append("")
        self._scanner = (scanner or _speedups.RuleScanner)(kinds, keys)

    # matching -------------------------------------------------------------

    def route(self, model: str, tags: Iterable[str] = (), needs: Iterable[str] = ()) -> Route:
        steady = self.steady is not None and self.steady()
        if steady:
            if self._lists != Provider.lists_changed:  # discovery replaced a list: judge again
                self._routes.clear()
                self._lists = Provider.lists_changed
            key = (model, tuple(tags), needs if isinstance(needs, frozenset) else frozenset(needs))
            kept = self._routes.get(key)
            if kept is not None:
                return kept
            route = self._find(model, tags, needs)
            if not isinstance(self.rules[route.rule], RandomRule):
                if len(self._routes) >= MAX_ROUTES:
                    self._routes.clear()
                self._routes[key] = route
            return route
        return self._find(model, tags, needs)

    def _find(self, model: str, tags: Iterable[str], needs: Iterable[str]) -> Route:
        query = RouteQuery(model, frozenset(tags), frozenset(needs))
        i = self._scanner.scan(model, query.tags, 0)
        down: list[str] = []
        while i >= 0:
            verdict = self._judge(i, query)
            if verdict.route is not None:
                return verdict.route
            if verdict.unavailable:
                down.append(verdict.reason)
            i = self._scanner.scan(model, query.tags, i + 1)
        if down:  # a rule matched, but what it picks is out of service: that is not the client's fault
            raise UpstreamError(f"no provider available for model '{model}': {'; '.join(down)}")
        raise NoRoute(model)

    def explain(self, model: str, tags: Iterable[str] = (), needs: Iterable[str] = ()) -> list[Verdict]:
        """Every rule's verdict up to the first that matches (for ``POST /v1/route``)."""
        query = RouteQuery(model, frozenset(tags), frozenset(needs))
        out: list[Verdict] = []
        for i, rule in enumerate(self.rules):
            if isinstance(rule, PrefixRule) and not model.startswith(rule.model_prefix):
                out.append(Verdict(i, rule.type, reason=f"model {model!r} does not start with {rule.model_prefix!r}"))
                continue
            if isinstance(rule, TagRule) and rule.tag not in query.tags:
                out.append(Verdict(i, rule.type, reason=f"request not tagged {rule.tag!r}"))
                continue
            verdict = self._judge(i, query)
            out.append(verdict)
            if verdict.route is not None:
                break
        return out

    # one rule -------------------------------------------------------------

    def _unfit(self, provider: str, model: str, needs: frozenset[str]) -> str:
        """Why (provider, model) cannot serve the request, or "" when it can."""
        p = self.providers.get(provider)
        if p is None:
            return f"provider {provider!r} is not configured"
        if not self.available(provider):
            return f"provider {provider!r} is unavailable (circuit breaker open)"
        if needs:
            caps = p.capabilities(model)
            missing = sorted(needs - caps) if caps is not None else []
            if missing:
                return f"model {model!r} on {provider!r} lacks {', '.join(missing)}"
        return ""

    def _route(self, i: int, rule: Any, provider: str, model: str) -> Route:
        chain = [(p, model) for p in getattr(rule, "fallbacks", ()) if p != provider]
        chain += [(provider, m) for m in getattr(rule, "fallback_models", ()) if m != model]
        return Route(provider, model, i, tuple(chain))

    def _candidates(self, rule: Any, query: RouteQuery, model: str) -> tuple[list[Any], list[str]]:
        names = rule.providers or [p.name for p in self.config.providers]
        fit, why = [], []
        for name in names:
            reason = self._unfit(name, model, query.needs)
            if reason:
                why.append(reason)
            else:
                fit.append(self.providers[name].config)
        return fit, why

    def _judge(self, i: int, query: RouteQuery) -> Verdict:
        rule = self.rules[i]
        v = Verdict(i, rule.type)
        if isinstance(rule, (PrefixRule, TagRule)):
            model = rule.rewrite_model or query.model
            v.reason = self._unfit(rule.provider, model, query.needs)
            if not v.reason:
                v.route = self._route(i, rule, rule.provider, model)
            else:
                v.unavailable = not self.available(rule.provider)
            return v
        if isinstance(rule, DiscoverRule):
            p = self.providers.get(rule.provider)
            if p is None or query.model not in p.models():
                v.reason = f"{rule.provider!r} does not list model {query.model!r}"
                return v
            v.reason = self._unfit(rule.provider, query.model, query.needs)
            if not v.reason:
                v.route = self._route(i, rule, rule.provider, query.model)
            return v
        if isinstance(rule, RandomRule) and rule.candidates:
            fit = [c for c in rule.candidates if not self._unfit(c.provider, c.model, query.needs)]
            if not fit:
                v.reason = "no candidate can serve the request"
                return v
            pick = random.choice(fit)
            v.route = self._route(i, rule, pick.provider, pick.model)
            return v
        model = getattr(rule, "rewrite_model", None) or query.model
        fit, why = self._candidates(rule, query, model)
        chosen = None
        if isinstance(rule, PriceRule):
            fit = [p for p in fit if rule.max_cost_per_1m_tokens is None or p.cost_per_1m_tokens <= rule.max_cost_per_1m_tokens]
            chosen = min(fit, key=lambda p: p.cost_per_1m_tokens, default=None)
            v.reason = "no provider within the price" if chosen is None else ""
        elif isinstance(rule, LatencyRule):
            fit = [p for p in fit if p.latency_ms is not None
                   and (rule.max_latency_ms is None or p.latency_ms <= rule.max_latency_ms)]
            chosen = min(fit, key=lambda p: p.latency_ms, default=None)
            v.reason = "no provider declares a latency within the limit" if chosen is None else ""
        elif isinstance(rule, ThroughputRule):
            fit = [p for p in fit if p.throughput_tokens_per_sec is not None
                   and (rule.min_tokens_per_sec is None or p.throughput_tokens_per_sec >= rule.min_tokens_per_sec)]
            chosen = max(fit, key=lambda p: p.throughput_tokens_per_sec, default=None)
            v.reason = "no provider declares enough throughput" if chosen is None else ""
        elif isinstance(rule, FallbackRule):
            qb = rule.quality_bias
            chosen = max(fit, key=lambda p: qb * p.quality - (1 - qb) * p.cost_per_1m_tokens, default=None)
            v.reason = "no provider can serve the request" if chosen is None else ""
        elif isinstance(rule, RandomRule):
            chosen = random.choice(fit) if fit else None
            v.reason = "no provider can serve the request" if chosen is None else ""
        if chosen is not None:
            v.route = self._route(i, rule, chosen.name, model)
        elif why:
            v.reason += f" ({'; '.join(why)})"
        return v

    # display --------------------------------------------------------------

    def describe(self) -> list[str]:
        """One line per rule, for ``fastroute check`` and the startup banner."""
        lines = []
        for i, rule in enumerate(self.rules):
            lines.append(f"{i}. {describe_rule(rule)}")
        return lines


def describe_rule(rule: Any) -> str:
    if isinstance(rule, PrefixRule):
        text = f"prefix {rule.model_prefix!r} -> {rule.provider}"
    elif isinstance(rule, TagRule):
        text = f"tag {rule.tag!r} -> {rule.provider}"
    elif isinstance(rule, DiscoverRule):
        text = f"discover: models {rule.provider} lists -> {rule.provider}"
    elif isinstance(rule, PriceRule):
        limit = f" up to {rule.max_cost_per_1m_tokens:g}/1M" if rule.max_cost_per_1m_tokens is not None else ""
        text = f"price: cheapest of {_names(rule.providers)}{limit}"
    elif isinstance(rule, LatencyRule):
        limit = f" up to {rule.max_latency_ms:g} ms" if rule.max_latency_ms is not None else ""
        text = f"latency: fastest declared of {_names(rule.providers)}{limit}"
    elif isinstance(rule, ThroughputRule):
        limit = f" at least {rule.min_tokens_per_sec:g} tok/s" if rule.min_tokens_per_sec is not None else ""
        text = f"throughput: highest of {_names(rule.providers)}{limit}"
    elif isinstance(rule, FallbackRule):
        text = f"fallback: best quality/cost (bias {rule.quality_bias:g}) of {_names(rule.providers)}"
    elif isinstance(rule, RandomRule):
        pool = (", ".join(f"{c.provider}:{c.model}" for c in rule.candidates) if rule.candidates
                else _names(rule.providers))
        text = f"random of {pool}"
    else:  # pragma: no cover - every rule type is listed above
        text = rule.type
    rewrite = getattr(rule, "rewrite_model", None)
    if rewrite:
        text += f" as {rewrite!r}"
    chain = [*getattr(rule, "fallbacks", ()), *(f"model {m}" for m in getattr(rule, "fallback_models", ()))]
    if chain:
        text += f"; then {', '.join(chain)}"
    return text


def _names(providers: tuple[str, ...]) -> str:
    return ", ".join(providers) if providers else "all providers"
