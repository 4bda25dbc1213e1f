"""Which model names a client can ask for: the one list behind ``GET /v1/models`` and ``GET /api/tags``.

A name is a candidate when it comes from

- a provider: its declared ``models`` and the models discovery found;
- a rule: its ``rewrite_model``, its ``fallback_models``, a ``random`` rule's
  candidates' models, and a ``prefix`` rule's ``model_prefix`` when that is a
  whole model name (see :func:`is_whole_name`);

and it is listed when the routing table routes it: a name that would be
answered with 400 is not offered.  Each listed name is owned by the provider
that serves it when a client asks for it, and carries that model's
capabilities when they are known.  Circuit breakers are not consulted: an open
breaker does not hide a model from the list.

The list is computed from the rules and the providers, and computed again only
when discovery has brought a new model list (each refresh replaces a
provider's ``discovered`` mapping, counted in ``Provider.lists_changed``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastroute.config import Config, PrefixRule, RandomRule
from fastroute.errors import RequestError
from fastroute.providers.base import Provider
from fastroute.routing.rules import Route, Router

#: a prefix that ends in one of these names a family of models ("claude-", "o/", "qwen2.5:"), not one model
SEPARATORS = "-/:._@"


@dataclass(frozen=True, slots=True)
class Listed:
    id: str
    #: the provider that serves it
    provider: str
    #: what it can do (vision, tools, coding); None when nobody said
    capabilities: frozenset[str] | None


def is_whole_name(prefix: str) -> bool:
    """A prefix rule's ``model_prefix`` is also a model's name when it is not empty, holds no
    space and does not end in a separator: ``echo`` and ``gpt-4o`` are names, ``claude-`` and
    ``o/`` are families."""
    return bool(prefix) and prefix[-1] not in SEPARATORS and not any(c.isspace() for c in prefix)


def candidate_names(config: Config, providers: dict[str, Any]) -> Iterator[str]:
    """Every name a client might ask for, in the order of the list (with repeats)."""
    for provider in providers.values():
        yield from provider.models()
    for rule in config.routers:
        if isinstance(rule, PrefixRule) and is_whole_name(rule.model_prefix):
            yield rule.model_prefix
        rewrite = getattr(rule, "rewrite_model", None)
        if rewrite:
            yield rewrite
        if isinstance(rule, RandomRule):
            for candidate in rule.candidates:
                yield candidate.model
        yield from getattr(rule, "fallback_models", ())


class Catalogue:
    """The models on offer, for the config and the (live) providers of one worker."""

    def __init__(self, config: Config, providers: dict[str, Any]) -> None:
        self.config = config
        self.providers = providers
        # a router of its own that sees every provider as available (no breaker hides a model)
        self._router = Router(config, providers)
        self._seen = -1  # Provider.lists_changed when the list was built
        self._listed: list[Listed] = []
        self._by_id: dict[str, Listed] = {}

    def models(self) -> list[Listed]:
        """The listed models, without repeats, in the order of :func:`candidate_names`."""
        if self._seen != Provider.lists_changed:  # a provider's discovered list was replaced
            self._seen = Provider.lists_changed
            self._rebuild()
        return self._listed

    def find(self, name: str) -> Listed | None:
        """One model: a listed one, or any other name the table routes (``gpt-4o`` by a ``gpt-``
        prefix); None when a request for it would be refused."""
        self.models()
        return self._by_id.get(name) or self._resolve(name)

    def _rebuild(self) -> None:
        listed: dict[str, Listed] = {}
        for name in candidate_names(self.config, self.providers):
            if name not in listed and (entry := self._resolve(name)) is not None:
                listed[name] = entry
        self._by_id = listed
        self._listed = list(listed.values())

    def _resolve(self, name: str) -> Listed | None:
        try:
            route = self._router.route(name)
        except RequestError:
            return None
        provider, model = self._owner(route, name)
        served = self.providers.get(provider)
        return Listed(name, provider, served.capabilities(model) if served is not None else None)

    def _owner(self, route: Route, name: str) -> tuple[str, str]:
        """Who serves ``name``, and as which model.  A ``random`` rule picks anew on every request:
        its candidate of that model name when it has one, else the first of its pool, so the list
        holds still."""
        rule = self.config.routers[route.rule] if route.rule >= 0 else None
        if not isinstance(rule, RandomRule):
            return route.provider, route.model
        if rule.candidates:
            pick = next((c for c in rule.candidates if c.model == name), rule.candidates[0])
            return pick.provider, pick.model
        pool = rule.providers or tuple(self.providers)
        return (pool[0] if pool else route.provider), route.model
