"""Routing per request: the table scan, compiled vs Python, with 10 to 500 rules.

    pytest benchmarks/ --benchmark-group-by=group,param:impl
"""

from __future__ import annotations

import pytest
from support import twin

from fastroute import _speedups
from fastroute.config import config_from_dict
from fastroute.providers import build_providers
from fastroute.routing import Router


def _config(n: int) -> dict:
    providers = [{"name": f"p{i}", "format": "openai", "base_url": f"http://h{i}/v1"} for i in range(10)]
    rules = []
    for i in range(n - 1):
        if i % 10 == 9:
            rules.append({"type": "tag", "tag": f"tag{i}", "provider": f"p{i % 10}"})
        else:
            rules.append({"type": "prefix", "model_prefix": f"family{i}-", "provider": f"p{i % 10}",
                          "rewrite_model": f"model{i}"})
    rules.append({"type": "price"})  # the catch-all at the end: every request scans the whole table
    return {"providers": providers, "routers": rules}


@pytest.fixture(params=["python", "compiled"])
def impl(request: pytest.FixtureRequest) -> type:
    return twin(request.param, _speedups.RuleScannerC, _speedups.RuleScannerPy)


@pytest.mark.parametrize("rules", [10, 100, 500])
def test_route_worst_case(benchmark, impl: type, rules: int) -> None:  # type: ignore[no-untyped-def]
    """A model no prefix matches: the whole table is scanned, then the catch-all decides."""
    cfg = config_from_dict(_config(rules))
    router = Router(cfg, build_providers(cfg, None), scanner=impl)
    benchmark.group = f"route-{rules}-rules"
    tags = frozenset({"chat"})
    assert benchmark(router.route, "unlisted-model", tags).rule == rules - 1


@pytest.mark.parametrize("rules", [10, 100, 500])
def test_scan_only(benchmark, impl: type, rules: int) -> None:  # type: ignore[no-untyped-def]
    cfg = config_from_dict(_config(rules))
    router = Router(cfg, build_providers(cfg, None), scanner=impl)
    scanner = router._scanner
    benchmark.group = f"scan-{rules}-rules"
    assert benchmark(scanner.scan, "family-none", frozenset(), 0) == rules - 1
