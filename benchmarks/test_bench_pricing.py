"""Pricing per request: ``Pricing.price_for`` (a kept answer: one dict lookup) plus ``cost_micros``,
against the built-in table of ~800 models; and, for scale, a first lookup (the resolve a kept
answer saves) and the table's load at startup.

    pytest benchmarks/test_bench_pricing.py --benchmark-group-by=group --benchmark-columns=median,ops
"""

from __future__ import annotations

import pytest

from fastroute.canonical import Usage
from fastroute.pricing import Pricing, cost_micros, load_table

#: (provider, model, what finds it): each step of the lookup order
LOOKUPS = [
    ("openai", "gpt-4o", "exact"),
    ("anthropic", "claude-sonnet-4-5-20250929", "exact-dated"),
    ("groq", "openai/gpt-oss-120b", "provider-prefix"),
    ("openrouter", "anthropic/claude-sonnet-4-5", "stripped"),
    ("local", "llama3.2:3b", "provider-fallback"),
]
USAGE = Usage(input_tokens=12_000, output_tokens=800, cached_input_tokens=10_240, cache_creation_tokens=512,
              reasoning_tokens=200)


@pytest.fixture(scope="module")
def pricing() -> Pricing:
    return Pricing(providers={"local": 0.0, "openai": 5.0, "anthropic": 15.0})


@pytest.mark.parametrize(("provider", "model"), [(p, m) for p, m, _ in LOOKUPS], ids=[i for _, _, i in LOOKUPS])
def test_price_and_cost_per_request(benchmark, pricing: Pricing, provider: str, model: str) -> None:  # type: ignore[no-untyped-def]
    """What the request path pays: the kept lookup, then the cost of the answer's usage."""
    benchmark.group = "pricing-per-request"
    pricing.price_for(provider, model)  # kept from the first request on

    def per_request() -> int:
        price = pricing.price_for(provider, model)
        assert price is not None
        return cost_micros(price, USAGE)

    assert benchmark(per_request) >= 0


@pytest.mark.parametrize(("provider", "model"), [(p, m) for p, m, _ in LOOKUPS], ids=[i for _, _, i in LOOKUPS])
def test_first_lookup(benchmark, pricing: Pricing, provider: str, model: str) -> None:  # type: ignore[no-untyped-def]
    """A model's first request: the whole lookup order, before the answer is kept."""
    benchmark.group = "pricing-first-lookup"
    assert benchmark(pricing._resolve, provider, model) is not None


def test_load_table(benchmark) -> None:  # type: ignore[no-untyped-def]
    """Once per worker at startup."""
    benchmark.group = "pricing-startup"
    assert benchmark.pedantic(lambda: Pricing(table=load_table()), rounds=5, iterations=1) is not None
