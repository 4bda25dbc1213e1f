"""``pareto-router``: pick the provider from a named tier (low / medium / high ...).

    [plugins.pareto-router]
    enabled = true
    default_tier = "medium"
    [plugins.pareto-router.tiers]
    low = ["local"]
    medium = ["openai"]
    high = ["anthropic"]

A request picks its tier with ``"plugins": [{"id": "pareto-router", "tier": "high"}]``
(or a top-level ``"tier"``).  The first provider of the tier is forced; routing
then only decides the model.
"""

from __future__ import annotations

from typing import Any

from fastroute.plugins import Plugin, PluginContext


class ParetoRouterPlugin(Plugin):
    id = "pareto-router"

    async def pre_request(self, ctx: PluginContext) -> Any:
        tier = ctx.settings.get("tier") or ctx.request.extra.get("tier") or ctx.settings.get("default_tier") or "medium"
        tiers = ctx.settings.get("tiers")
        if not isinstance(tiers, dict) or not tiers:
            raise ValueError("no tiers configured (e.g. [plugins.pareto-router.tiers])")
        providers = tiers.get(tier)
        if not isinstance(providers, list):
            raise ValueError(f"unknown tier {tier!r} (configured tiers: {', '.join(tiers)})")
        if not providers or not isinstance(providers[0], str):
            raise ValueError(f"tier {tier!r} has no providers configured")
        ctx.forced_provider = providers[0]
        ctx.state["tier"] = tier
        return None
