"""A half-open circuit breaker's trial always settles: in process, the real pipeline and a scripted
provider that fails, answers 4xx, is cancelled or raises a bug as its trial."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fastroute.canonical import ChatRequest, ChatResponse, TextPart
from fastroute.config import config_from_dict
from fastroute.errors import ProviderStatusError, UpstreamError, UpstreamTimeout
from fastroute.formats import openai as dialect
from fastroute.pipeline import Pipeline
from fastroute.providers.echo import EchoProvider
from fastroute.routing import Router
from fastroute.routing.health import Health


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Scripted(EchoProvider):
    """Answers by a script: each send() takes the next step (an exception to raise, or 'ok')."""

    def __init__(self, config: Any) -> None:
        super().__init__(config, None)
        self.script: list[Any] = []
        self.calls = 0

    async def send(self, request: ChatRequest, client_key: str | None = None) -> ChatResponse:
        self.calls += 1
        step = self.script.pop(0) if self.script else "ok"
        if step != "ok":
            raise step
        return ChatResponse(id="r", model=request.model, content=[TextPart("fine")])


def pipeline() -> tuple[Pipeline, Scripted, Clock]:
    config = config_from_dict({
        "failover": {"breaker_threshold": 1, "breaker_cooldown_s": 30, "max_attempts": 1},
        "providers": [{"name": "p", "format": "echo"}],
        "routers": [{"type": "prefix", "model_prefix": "m", "provider": "p"}]})
    provider = Scripted(config.providers[0])
    clock = Clock()
    health = Health(config.failover, clock)
    providers = {"p": provider}
    return Pipeline(config, providers, Router(config, providers, health.available), health), provider, clock


def answer(p: Pipeline) -> Any:
    return asyncio.run(p.dispatch(dialect, {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, None))


def ask(p: Pipeline) -> int:
    return answer(p).status


@pytest.mark.parametrize("trial, settles", [
    (ProviderStatusError("p", 400, "context too long"), "closed"),  # it answered: it is up
    (ProviderStatusError("p", 429, "slow down"), "open"),            # it answered, but has no room: retryable
    (UpstreamError("boom", provider="p"), "open"),                   # it failed again: re-opened
    (UpstreamTimeout("slow", provider="p"), "open"),
    (RuntimeError("a bug in fastroute"), "half-open"),               # no verdict: the next request tries
])
def test_the_trial_always_settles(trial: Exception, settles: str) -> None:
    p, provider, clock = pipeline()
    provider.script = [UpstreamError("down", provider="p"), trial]
    assert ask(p) == 502 and p.health.state("p") == "open"
    refused = answer(p)  # open: nobody is called
    assert refused.status == 502 and b"circuit breaker open" in refused.body and provider.calls == 1
    clock.now += 31  # past the cool-down: half open, one trial goes through
    ask(p)
    assert provider.calls == 2 and p.health.state("p") == settles
    if settles != "open":
        assert ask(p) == 200 and p.health.state("p") == "closed"  # never stuck open until a restart
    assert p.in_flight == 0


def test_a_cancelled_trial_releases_the_breaker() -> None:
    p, provider, clock = pipeline()
    provider.script = [UpstreamError("down", provider="p"), asyncio.CancelledError()]
    ask(p)
    clock.now += 31
    with pytest.raises(asyncio.CancelledError):
        ask(p)
    assert p.health.state("p") == "half-open"  # released: the next request is the trial
    assert ask(p) == 200 and p.health.state("p") == "closed"
