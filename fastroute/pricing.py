"""What a request cost: prices per model, and integer micro-dollars from the usage an upstream reported.

Three sources of prices, most specific first:

1. the config's ``[pricing."<model>"]`` tables (:func:`parse_pricing`);
2. the built-in table ``fastroute/data/prices.json`` (:func:`load_table`), made by
   ``scripts/gen_prices.py`` from LiteLLM's public price list;
3. each provider's ``cost_per_1m_tokens``: one blended price for input and output tokens alike.

:meth:`Pricing.price_for` finds a model's price once and keeps the answer (a bounded dict), so
the request path pays one dict lookup; :func:`cost_micros` prices a :class:`~fastroute.canonical.Usage`.

How usage is priced.  fastroute's decoders normalize every dialect to one rule:
``Usage.input_tokens`` counts *all* input tokens, those read from and written to the prompt
cache included.  OpenAI's ``prompt_tokens`` already does (its ``cached_tokens`` are a part of
it; OpenAI reports no cache writes); Anthropic's ``input_tokens`` does not, so its decoder adds
``cache_read_input_tokens`` and ``cache_creation_input_tokens`` to it; Ollama has no cache
fields.  So the uncached input is ``input_tokens - cached_input_tokens - cache_creation_tokens``
(never below 0), priced at the prompt price; cache reads at the cached price, cache writes at the
cache-write price (each the prompt price when the table has none); ``output_tokens`` (reasoning
tokens are a part of them) at the completion price.  Prices are kept as integers in millionths
of a USD per million tokens, so the sum is exact and rounded once, half up, to whole micro-dollars.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastroute.canonical import Usage
from fastroute.errors import ConfigError
from fastroute.errors import describe as _describe

__all__ = ["Price", "PriceTable", "Pricing", "cost_micros", "load_table", "parse_pricing"]

#: prices are held as integers in units of 1e-6 USD per million tokens (= 1e-6 micro-dollars a token)
_SCALE = 1_000_000
_HALF = _SCALE // 2


@dataclass(frozen=True, slots=True)
class Price:
    """A model's price in USD per million tokens; None: the table has no separate price (the prompt price applies)."""

    prompt: float
    completion: float
    cached_prompt: float | None = None
    cache_write: float | None = None
    # the same, scaled to integers for exact sums (filled in by __post_init__)
    _prompt: int = field(init=False, repr=False, compare=False, default=0)
    _completion: int = field(init=False, repr=False, compare=False, default=0)
    _cached: int = field(init=False, repr=False, compare=False, default=0)
    _write: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        for name in ("prompt", "completion", "cached_prompt", "cache_write"):
            value = getattr(self, name)
            if value is not None and not _is_price(value):
                raise ValueError(f"{name}: expected a number ≥ 0, got {value!r}")
        prompt = _scaled(self.prompt)
        object.__setattr__(self, "_prompt", prompt)
        object.__setattr__(self, "_completion", _scaled(self.completion))
        object.__setattr__(self, "_cached", prompt if self.cached_prompt is None else _scaled(self.cached_prompt))
        object.__setattr__(self, "_write", prompt if self.cache_write is None else _scaled(self.cache_write))

    @classmethod
    def blended(cls, per_million: float) -> Price:
        """One price for every token (a provider's ``cost_per_1m_tokens``)."""
        return cls(per_million, per_million)


def _is_price(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value >= 0


def _scaled(per_million: float) -> int:
    return round(per_million * _SCALE)


def cost_micros(price: Price, usage: Usage) -> int:
    """What ``usage`` cost at ``price``, in whole micro-dollars (1e-6 USD), rounded half up once.

    ``usage.input_tokens`` counts every input token, cache reads and writes included (see the
    module's docstring for each dialect); the part that is neither is priced as plain prompt."""
    cached = usage.cached_input_tokens
    written = usage.cache_creation_tokens
    fresh = usage.input_tokens - cached - written
    if fresh < 0:  # noqa: PLR1730 (max() is a call: 40% of this function's time)
        fresh = 0
    return (fresh * price._prompt + cached * price._cached + written * price._write
            + usage.output_tokens * price._completion + _HALF) // _SCALE


# ── the config's [pricing] ──────────────────────────────────────────────────

_REQUIRED = ("prompt_cost_per_million", "completion_cost_per_million")
_OPTIONAL = ("cached_prompt_cost_per_million", "cache_write_cost_per_million")
_KEYS = frozenset(_REQUIRED + _OPTIONAL)


def parse_pricing(raw: Any, path: str = "pricing", source: str = "<config>") -> dict[str, Price]:
    """The config's ``[pricing."<model>"]`` tables -> a Price for each model.

    ``prompt_cost_per_million`` and ``completion_cost_per_million`` are required,
    ``cached_prompt_cost_per_million`` and ``cache_write_cost_per_million`` optional; all USD per
    million tokens, numbers ≥ 0.  Anything else is a :class:`~fastroute.errors.ConfigError` naming
    the key's path, e.g. ``pricing."gpt-4o".prompt_cost_per_million``.  A model may be written
    ``"<provider>/<model>"`` to price it on one provider only (see :meth:`Pricing.price_for`)."""
    if not isinstance(raw, dict):
        raise ConfigError(source, path, f"expected a table, got {_describe(raw)}")
    prices: dict[str, Price] = {}
    for model, table in raw.items():
        where = f"{path}.{json.dumps(model, ensure_ascii=False)}"
        if not model:
            raise ConfigError(source, where, "a model name cannot be empty")
        if not isinstance(table, dict):
            raise ConfigError(source, where, f"expected a table, got {_describe(table)}")
        for key in table:
            if key not in _KEYS:
                hint = difflib.get_close_matches(key, sorted(_KEYS), n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ConfigError(source, f"{where}.{key}", f"unknown key{suggestion}; allowed: {', '.join(sorted(_KEYS))}")
        values: dict[str, float | None] = {}
        for key in _REQUIRED + _OPTIONAL:
            value = table.get(key)
            if value is None:
                if key in _REQUIRED:
                    raise ConfigError(source, f"{where}.{key}", "missing required key")
                values[key] = None
            elif not _is_price(value):
                raise ConfigError(source, f"{where}.{key}", f"expected a number ≥ 0, got {_describe(value)}")
            else:
                values[key] = float(value)
        prices[model] = Price(values["prompt_cost_per_million"], values["completion_cost_per_million"],  # type: ignore[arg-type]
                              values["cached_prompt_cost_per_million"], values["cache_write_cost_per_million"])
    return prices


# ── the built-in table ──────────────────────────────────────────────────────

@dataclass(frozen=True, slots=True)
class PriceTable:
    """A price list: where it came from, of what day, and a Price for each model name."""

    source: str
    date: str
    models: dict[str, Price]


def load_table(path: str | os.PathLike[str] | None = None) -> PriceTable:
    """Read a table in ``fastroute/data/prices.json``'s shape (that file when ``path`` is None);
    a malformed one is a ValueError naming the entry."""
    if path is None:
        text = resources.files("fastroute").joinpath("data", "prices.json").read_text(encoding="utf-8")
        where = "fastroute/data/prices.json"
    else:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        where = os.fspath(path)
    doc = json.loads(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict):
        # a malformed file, like a JSON syntax error: ValueError
        raise ValueError(f"{where}: expected an object with a 'models' object")  # noqa: TRY004
    models: dict[str, Price] = {}
    for name, entry in doc["models"].items():
        try:
            models[name] = _entry_price(entry)
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise ValueError(f"{where}: models.{json.dumps(name)}: {exc}") from None
    return PriceTable(str(doc.get("source", "")), str(doc.get("date", "")), models)


def _entry_price(entry: dict[str, Any]) -> Price:
    return Price(entry["prompt"], entry["completion"], entry.get("cached_prompt"), entry.get("cache_write"))


def _builtin_entries() -> tuple[tuple[str, str], dict[str, dict[str, Any]]]:
    """``fastroute/data/prices.json``'s source, date and entries, parsed and not checked: the file is
    generated, and its every entry is checked by :func:`load_table` in the tests."""
    import orjson

    doc = orjson.loads(resources.files("fastroute").joinpath("data", "prices.json").read_bytes())
    return (str(doc.get("source", "")), str(doc.get("date", ""))), doc["models"]


# ── lookup ──────────────────────────────────────────────────────────────────

_MISS = object()


class Pricing:
    """Every price fastroute knows, and the lookup the request path uses.

    ``overrides``: the config's ``[pricing]`` (:func:`parse_pricing`); ``providers``: each
    provider's ``cost_per_1m_tokens`` by provider name (used as given, 0 included);
    ``table``: the built-in table (None: load ``fastroute/data/prices.json``; ``{}``: none).
    """

    __slots__ = ("_bare", "_cache", "_exact", "_max_cached", "_meta", "_table", "overrides", "providers")

    def __init__(self, overrides: Mapping[str, Price] | None = None, providers: Mapping[str, float] | None = None,
                 table: PriceTable | Mapping[str, Price] | None = None, max_cached: int = 4096) -> None:
        self.overrides: dict[str, Price] = dict(overrides or {})
        self.providers: dict[str, Price] = {name: Price.blended(cost) for name, cost in (providers or {}).items()}
        # the table is read and indexed on the first lookup the config does not answer (a worker
        # whose prices are all in the config, or that prices nothing, never holds its ~0.35 MB)
        self._table = table
        self._exact: dict[str, Price] | None = None
        self._bare: dict[str, Price] = {}
        self._meta = ("", "")
        self._cache: dict[tuple[str | None, str], Price | None] = {}
        self._max_cached = max_cached

    @property
    def source(self) -> str:
        """Where the built-in table came from (``litellm <version>``)."""
        self._index()
        return self._meta[0]

    @property
    def date(self) -> str:
        self._index()
        return self._meta[1]

    def _index(self) -> tuple[dict[str, Price], dict[str, Price]]:
        """The table by lower-cased name, and its ``"<prefix>/<name>"`` entries by name (when
        unambiguous: one name priced differently by two hosts is left to the provider prefix or
        the fallback)."""
        if self._exact is not None:
            return self._exact, self._bare
        table = self._table
        self._table = None
        models: Mapping[str, Any]
        if table is None:  # the built-in table's entries as they are: a Price is made when one is asked for
            self._meta, models = _builtin_entries()
        elif isinstance(table, PriceTable):
            self._meta, models = (table.source, table.date), table.models
        else:
            models = table
        exact: dict[str, Any] = {}
        bare: dict[str, Any] = {}
        for name, price in models.items():
            key = name.lower()
            exact.setdefault(key, price)
            if "/" in key:
                rest = key.split("/", 1)[1]
                if rest not in bare:
                    bare[rest] = price
                elif bare[rest] != price:
                    bare[rest] = None
        self._bare = {k: v for k, v in bare.items() if v is not None}
        self._exact = exact
        return exact, self._bare

    def price_for(self, provider: str | None, model: str) -> Price | None:
        """The price of ``model`` served by ``provider``, None when nothing prices it.

        In this order: the config's ``"<provider>/<model>"`` then ``"<model>"``; the built-in
        table's ``<model>`` as it is (``claude-sonnet-4-5-20250929``), then with the provider's
        prefix added (``groq`` + ``llama-3.3-70b-versatile`` -> ``groq/llama-3.3-70b-versatile``),
        then an entry of another prefix by the same name, then with the model's own prefix
        stripped (``anthropic/claude-sonnet-4-5`` -> ``claude-sonnet-4-5``); the built-in names
        case-insensitively; last, the provider's ``cost_per_1m_tokens``.  Each answer is kept."""
        key = (provider, model)
        hit = self._cache.get(key, _MISS)
        if hit is not _MISS:
            return hit  # type: ignore[return-value]
        price = self._resolve(provider, model)
        cache = self._cache
        if len(cache) >= self._max_cached:
            del cache[next(iter(cache))]  # the oldest answer: model names come from clients
        cache[key] = price
        return price

    def cost(self, provider: str | None, model: str, usage: Usage) -> int | None:
        """What ``usage`` cost in micro-dollars; None when nothing prices the model."""
        price = self.price_for(provider, model)
        return None if price is None else cost_micros(price, usage)

    def _resolve(self, provider: str | None, model: str) -> Price | None:
        overrides = self.overrides
        if provider is not None and f"{provider}/{model}" in overrides:
            return overrides[f"{provider}/{model}"]
        if model in overrides:
            return overrides[model]
        name = model.lower()
        exact, bare = self._index()
        candidates = [exact.get(name)]
        if provider:
            candidates.append(exact.get(f"{provider.lower()}/{name}"))
        candidates.append(bare.get(name))
        if "/" in name:
            stripped = name.split("/", 1)[1]
            candidates += [exact.get(stripped), bare.get(stripped)]
        for price in candidates:
            if price is not None:
                return price if type(price) is Price else _entry_price(price)
        return self.providers.get(provider) if provider is not None else None
