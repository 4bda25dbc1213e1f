from __future__ import annotations

import pytest

from fastroute.config import config_from_dict
from fastroute.errors import ConfigError, NoRoute
from fastroute.routing import Route, Router

PROVIDERS = [{"name": "a", "format": "echo"}, {"name": "b", "format": "echo"}]


def router(*rules: dict) -> Router:
    return Router(config_from_dict({"providers": PROVIDERS, "routers": list(rules)}))


def test_first_matching_prefix_wins_and_rewrites() -> None:
    r = router({"type": "prefix", "model_prefix": "gpt-4o", "provider": "a", "rewrite_model": "big"},
               {"type": "prefix", "model_prefix": "gpt-", "provider": "b"})
    assert r.route("gpt-4o-mini") == Route("a", "big", 0)
    assert r.route("gpt-3.5") == Route("b", "gpt-3.5", 1)


def test_no_match_is_a_400_naming_the_model() -> None:
    r = router({"type": "prefix", "model_prefix": "gpt-", "provider": "a"})
    with pytest.raises(NoRoute) as info:
        r.route("claude-x")
    assert info.value.status == 400
    assert info.value.message == "no provider configured for model 'claude-x'"


def test_rule_types_not_built_yet_are_refused_at_startup() -> None:
    with pytest.raises(ConfigError, match=r"routers\[0\].type: 'tag' rules are not supported"):
        router({"type": "tag", "tag": "code", "provider": "a"})
