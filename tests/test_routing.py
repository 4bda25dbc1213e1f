"""The routing table: every rule type, capability skipping, breakers, the explanation."""

from __future__ import annotations

import pytest

from fastroute import _speedups
from fastroute.config import config_from_dict
from fastroute.errors import ConfigError, NoRoute, UpstreamError
from fastroute.providers import build_providers
from fastroute.routing import Route, Router
from fastroute.routing.health import Health

PROVIDERS = [
    {"name": "cheap", "format": "openai", "base_url": "http://x/v1", "cost_per_1m_tokens": 0.1, "quality": 50,
     "latency_ms": 900, "throughput_tokens_per_sec": 20},
    {"name": "fast", "format": "openai", "base_url": "http://y/v1", "cost_per_1m_tokens": 2.0, "quality": 80,
     "latency_ms": 200, "throughput_tokens_per_sec": 150, "capabilities": ["tools"]},
    {"name": "best", "format": "anthropic", "base_url": "http://z", "cost_per_1m_tokens": 15.0, "quality": 98,
     "capabilities": ["vision", "tools"]},
    {"name": "local", "format": "ollama", "base_url": "http://w", "discover": True, "cost_per_1m_tokens": 0.5},
]


@pytest.fixture(params=["python", "compiled"])
def scanner(request: pytest.FixtureRequest) -> type:
    if request.param == "python":
        return _speedups.RuleScannerPy
    if _speedups.RuleScannerC is None:
        pytest.skip("compiled speedups not built or FASTROUTE_NO_EXTENSIONS set")
    return _speedups.RuleScannerC


def router(scanner: type, *rules: dict, health: Health | None = None) -> Router:
    cfg = config_from_dict({"providers": PROVIDERS, "routers": list(rules)})
    providers = build_providers(cfg, None)
    providers["local"].discovered = {"qwen3:8b": frozenset({"tools"}), "llava:7b": frozenset({"vision"})}
    return Router(cfg, providers, health.available if health else None, scanner=scanner)


def test_prefix_first_match_wins_and_rewrites(scanner: type) -> None:
    r = router(scanner, {"type": "prefix", "model_prefix": "gpt-4o", "provider": "fast", "rewrite_model": "big"},
               {"type": "prefix", "model_prefix": "gpt-", "provider": "cheap"})
    assert r.route("gpt-4o-mini") == Route("fast", "big", 0)
    assert r.route("gpt-3.5") == Route("cheap", "gpt-3.5", 1)
    with pytest.raises(NoRoute, match="no provider configured for model 'claude-x'"):
        r.route("claude-x")


def test_tag_rule(scanner: type) -> None:
    r = router(scanner, {"type": "tag", "tag": "code", "provider": "best", "rewrite_model": "claude-code"},
               {"type": "prefix", "model_prefix": "", "provider": "cheap"})
    assert r.route("m", tags={"code"}) == Route("best", "claude-code", 0)
    assert r.route("m", tags={"chat"}).provider == "cheap"


def test_discover_rule_uses_the_listed_models(scanner: type) -> None:
    r = router(scanner, {"type": "discover", "provider": "local"}, {"type": "prefix", "model_prefix": "", "provider": "cheap"})
    assert r.route("qwen3:8b") == Route("local", "qwen3:8b", 0)
    assert r.route("mistral:7b").provider == "cheap"


def test_price_latency_throughput_fallback(scanner: type) -> None:
    assert router(scanner, {"type": "price"}).route("m").provider == "cheap"
    assert router(scanner, {"type": "price", "providers": ["fast", "best"]}).route("m").provider == "fast"
    with pytest.raises(NoRoute):
        router(scanner, {"type": "price", "providers": ["best"], "max_cost_per_1m_tokens": 5}).route("m")
    # providers without a declared latency are excluded
    assert router(scanner, {"type": "latency"}).route("m").provider == "fast"
    with pytest.raises(NoRoute):
        router(scanner, {"type": "latency", "providers": ["best", "local"]}).route("m")
    assert router(scanner, {"type": "throughput"}).route("m").provider == "fast"
    with pytest.raises(NoRoute):
        router(scanner, {"type": "throughput", "min_tokens_per_sec": 500}).route("m")
    # qb * quality - (1 - qb) * cost: all quality picks best, all cost picks cheap
    assert router(scanner, {"type": "fallback", "quality_bias": 1.0}).route("m").provider == "best"
    assert router(scanner, {"type": "fallback", "quality_bias": 0.0}).route("m").provider == "cheap"
    assert router(scanner, {"type": "fallback", "rewrite_model": "x"}).route("m").model == "x"


def test_random_picks_among_providers_or_candidates(scanner: type) -> None:
    seen = {router(scanner, {"type": "random", "providers": ["cheap", "fast"]}).route("m").provider for _ in range(60)}
    assert seen == {"cheap", "fast"}
    r = router(scanner, {"type": "random", "candidates": [{"provider": "best", "model": "opus"},
                                                         {"provider": "fast", "model": "turbo"}]})
    picks = {(x.provider, x.model) for x in (r.route("anything") for _ in range(60))}
    assert picks == {("best", "opus"), ("fast", "turbo")}


def test_rules_skip_models_that_lack_what_the_request_needs(scanner: type) -> None:
    r = router(scanner, {"type": "prefix", "model_prefix": "", "provider": "fast"},
               {"type": "prefix", "model_prefix": "", "provider": "best"})
    assert r.route("m", needs={"tools"}).provider == "fast"
    assert r.route("m", needs={"vision"}).provider == "best"  # fast declares tools only
    r = router(scanner, {"type": "discover", "provider": "local"})
    assert r.route("llava:7b", needs={"vision"}).provider == "local"
    with pytest.raises(NoRoute):
        r.route("qwen3:8b", needs={"vision"})
    # undeclared capabilities are assumed: "cheap" declares none
    assert router(scanner, {"type": "price", "providers": ["cheap"]}).route("m", needs={"vision"}).provider == "cheap"
    # among candidates, the unfit are left out
    assert router(scanner, {"type": "price", "providers": ["fast", "best"]}).route("m", needs={"vision"}).provider == "best"


def test_fallback_chain_is_carried_on_the_route(scanner: type) -> None:
    r = router(scanner, {"type": "prefix", "model_prefix": "", "provider": "fast", "fallbacks": ["cheap", "best"],
                         "fallback_models": ["turbo-2"]})
    assert r.route("m").fallbacks == (("cheap", "m"), ("best", "m"), ("fast", "turbo-2"))


def test_open_breaker_skips_the_provider(scanner: type) -> None:
    now = [100.0]
    health = Health(config_from_dict({"failover": {"breaker_threshold": 2, "breaker_cooldown_s": 10}}).failover,
                    clock=lambda: now[0])
    r = router(scanner, {"type": "prefix", "model_prefix": "", "provider": "fast"},
               {"type": "prefix", "model_prefix": "x", "provider": "cheap"}, health=health)
    health.failure("fast")
    assert r.route("m").provider == "fast"  # one failure: still closed
    health.failure("fast")
    assert health.state("fast") == "open"
    assert r.route("xm").provider == "cheap"
    with pytest.raises(UpstreamError, match="circuit breaker open"):
        r.route("m")
    now[0] += 10  # cool-down over: one trial goes through
    assert health.state("fast") == "half-open" and r.route("m").provider == "fast"
    health.begin("fast")
    assert not health.available("fast")  # only one trial at a time
    health.success("fast")
    assert health.state("fast") == "closed"


def test_explain_says_why_each_rule_did_not_match(scanner: type) -> None:
    r = router(scanner, {"type": "prefix", "model_prefix": "gpt-", "provider": "cheap"},
               {"type": "tag", "tag": "code", "provider": "best"},
               {"type": "prefix", "model_prefix": "", "provider": "fast"},
               {"type": "price"})
    verdicts = r.explain("claude-x", tags=[], needs={"vision"})
    assert [v.index for v in verdicts] == [0, 1, 2, 3]
    assert "does not start with 'gpt-'" in verdicts[0].reason
    assert "not tagged 'code'" in verdicts[1].reason
    assert "lacks vision" in verdicts[2].reason
    assert verdicts[3].route is not None and verdicts[3].route.provider == "cheap"


def test_scanner_twins_agree_on_many_rules() -> None:
    if _speedups.RuleScannerC is None:
        pytest.skip("compiled speedups not built")
    import random

    rng = random.Random(7)
    kinds = [rng.choice([0, 0, 0, 1, 2]) for _ in range(500)]
    keys = [("m" + str(rng.randrange(50)) if k == 0 else "t" + str(rng.randrange(9)) if k == 1 else "")
            for k in kinds]
    py, c = _speedups.RuleScannerPy(kinds, keys), _speedups.RuleScannerC(kinds, keys)
    for _ in range(300):
        model = "m" + str(rng.randrange(60)) + rng.choice(["", "-x", "é"])
        tags = frozenset("t" + str(rng.randrange(12)) for _ in range(rng.randrange(3)))
        start = rng.randrange(520)
        assert py.scan(model, tags, start) == c.scan(model, tags, start)


def test_bad_rules_fail_at_startup() -> None:
    with pytest.raises(ConfigError, match=r"routers\[0\].fallbacks\[0\]: unknown provider 'nope'"):
        config_from_dict({"providers": PROVIDERS, "routers": [
            {"type": "prefix", "model_prefix": "", "provider": "fast", "fallbacks": ["nope"]}]})
    with pytest.raises(ConfigError, match="cannot be discovered"):
        config_from_dict({"providers": PROVIDERS, "routers": [{"type": "discover", "provider": "best"}]})


# ── routes kept while nothing they were judged by changed ─────────────────

def steady_router(scanner: type, health: Health, *rules: dict) -> Router:
    cfg = config_from_dict({"providers": PROVIDERS, "routers": list(rules)})
    providers = build_providers(cfg, None)
    providers["local"].discovered = {"qwen3:8b": frozenset({"tools"})}
    return Router(cfg, providers, health.available, scanner=scanner, steady=health.steady)


def test_a_kept_route_is_the_one_found_and_goes_when_a_breaker_opens(scanner: type) -> None:
    health = Health(config_from_dict({}).failover)
    r = steady_router(scanner, health, {"type": "prefix", "model_prefix": "gpt-", "provider": "fast",
                                        "fallbacks": ["cheap"]},
                      {"type": "price"})
    first = r.route("gpt-x", ["chat"], frozenset())
    assert r.route("gpt-x", ["chat"], frozenset()) is first  # kept: the same object
    assert r.route("gpt-x", ["code"], frozenset()) is not first  # other tags: judged again
    for _ in range(health.config.breaker_threshold):
        health.failure("fast")
    assert not health.steady()
    assert r.route("gpt-x", ["chat"], frozenset()).provider == "cheap"  # the open breaker is seen at once
    health.success("fast")
    assert health.steady() and r.route("gpt-x", ["chat"], frozenset()).provider == "fast"


def test_kept_routes_go_when_discovery_refreshed(scanner: type) -> None:
    health = Health(config_from_dict({}).failover)
    r = steady_router(scanner, health, {"type": "discover", "provider": "local"},
                      {"type": "prefix", "model_prefix": "", "provider": "cheap"})
    first = r.route("llava:7b")
    assert first.provider == "cheap" and r.route("llava:7b") is first  # kept
    r.providers["local"].discovered = {"llava:7b": frozenset({"vision"})}  # what discovery does
    assert r.route("llava:7b").provider == "local"


def test_random_picks_are_never_kept(scanner: type) -> None:
    health = Health(config_from_dict({}).failover)
    r = steady_router(scanner, health, {"type": "random", "candidates": [
        {"provider": "cheap", "model": "a"}, {"provider": "fast", "model": "b"}]})
    assert {r.route("m").provider for _ in range(200)} == {"cheap", "fast"}

