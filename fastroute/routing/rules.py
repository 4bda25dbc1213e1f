"""The routing table: ``[[routers]]`` rules compiled once, tried top to bottom.

Each rule type compiles to a callable ``(model, tags) -> Route | None``; the
first that returns a route wins and no match is a 400.  New rule types drop in
as one more entry of ``_COMPILERS``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fastroute.config import Config, PrefixRule
from fastroute.errors import ConfigError, NoRoute


@dataclass(frozen=True, slots=True)
class Route:
    provider: str
    #: the model name sent upstream
    model: str
    #: index of the rule in [[routers]] that matched
    rule: int


Matcher = Callable[[str, frozenset[str]], "Route | None"]


def _compile_prefix(rule: PrefixRule, index: int) -> Matcher:
    prefix, provider, rewrite = rule.model_prefix, rule.provider, rule.rewrite_model

    def match(model: str, tags: frozenset[str]) -> Route | None:
        if model.startswith(prefix):
            return Route(provider, rewrite or model, index)
        return None

    return match


_COMPILERS: dict[str, Callable[..., Matcher]] = {"prefix": _compile_prefix}


class Router:
    """The compiled routing table."""

    def __init__(self, config: Config) -> None:
        self._matchers: list[Matcher] = []
        self.rules = config.routers
        for i, rule in enumerate(config.routers):
            compiler = _COMPILERS.get(rule.type)
            if compiler is None:
                raise ConfigError(config.source, f"routers[{i}].type",
                                  f"{rule.type!r} rules are not supported by this version yet "
                                  f"(supported: {', '.join(_COMPILERS)})")
            self._matchers.append(compiler(rule, i))

    def route(self, model: str, tags: Iterable[str] = ()) -> Route:
        frozen = tags if isinstance(tags, frozenset) else frozenset(tags)
        for match in self._matchers:
            found = match(model, frozen)
            if found is not None:
                return found
        raise NoRoute(model)

    def describe(self) -> list[str]:
        """One line per rule, for ``fastroute check`` and the startup banner."""
        lines = []
        for i, rule in enumerate(self.rules):
            if isinstance(rule, PrefixRule):
                target = f" as {rule.rewrite_model!r}" if rule.rewrite_model else ""
                lines.append(f"{i}. prefix {rule.model_prefix!r:<24} -> {rule.provider}{target}")
            else:
                lines.append(f"{i}. {rule.type} {rule}")
        return lines
