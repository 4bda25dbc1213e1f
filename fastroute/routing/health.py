"""Per-provider circuit breakers, and the backoff between failover attempts."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from fastroute.config import FailoverConfig


@dataclass(slots=True)
class Breaker:
    failures: int = 0
    opened_at: float | None = None
    trial_running: bool = False


#: breakers kept at most: far more than any config has providers (only configured providers are
#: ever routed to); past it, closed breakers are forgotten, as a closed breaker is the same as none
MAX_BREAKERS = 1024


class Health:
    """Opens a provider's breaker after consecutive failures; after the cool-down,
    lets one trial request through: its success closes the breaker, its failure re-opens it, and
    an attempt that gives no verdict releases it for the next request (never stuck open)."""

    def __init__(self, config: FailoverConfig, clock=time.monotonic,  # type: ignore[no-untyped-def]
                 max_breakers: int = MAX_BREAKERS) -> None:
        self.config = config
        self.clock = clock
        self.max_breakers = max_breakers
        self._breakers: dict[str, Breaker] = {}
        #: providers whose breaker is open or half open
        self._open: set[str] = set()

    def _get(self, provider: str) -> Breaker:
        b = self._breakers.get(provider)
        if b is None:
            if len(self._breakers) >= self.max_breakers:
                self._forget()
            b = self._breakers[provider] = Breaker()
        return b

    def _forget(self) -> None:
        """Make room: drop the closed breakers with no running trial (a failure count that has not
        opened one goes with them), else the one opened longest ago."""
        idle = [name for name, b in self._breakers.items() if b.opened_at is None and not b.trial_running]
        if not idle:
            idle = [min(self._breakers, key=lambda name: self._breakers[name].opened_at or 0.0)]
        for name in idle:
            del self._breakers[name]
            self._open.discard(name)

    def steady(self) -> bool:
        """No breaker is open or half open: every provider is available, as it was a moment ago."""
        return not self._open

    def available(self, provider: str) -> bool:
        """May a request go to this provider now? (Read-only: routing asks this.)"""
        b = self._breakers.get(provider)
        if b is None or b.opened_at is None:
            return True
        return not b.trial_running and self.clock() - b.opened_at >= self.config.breaker_cooldown_s

    def begin(self, provider: str) -> None:
        """A request is about to go out: if the breaker is half open, this is its one trial."""
        b = self._breakers.get(provider)
        if b is not None and b.opened_at is not None:
            b.trial_running = True

    def release(self, provider: str) -> None:
        """The attempt ended without a verdict on the provider (client gone, refused before it was
        sent, a bug): a half-open breaker lets the next request be its trial."""
        b = self._breakers.get(provider)
        if b is not None:
            b.trial_running = False

    def success(self, provider: str) -> None:
        b = self._get(provider)
        b.failures, b.opened_at, b.trial_running = 0, None, False
        self._open.discard(provider)

    def failure(self, provider: str) -> None:
        b = self._get(provider)
        b.failures += 1
        b.trial_running = False
        if b.opened_at is not None or b.failures >= self.config.breaker_threshold:
            b.opened_at = self.clock()
            self._open.add(provider)

    def state(self, provider: str) -> str:
        b = self._breakers.get(provider)
        if b is None or b.opened_at is None:
            return "closed"
        return "half-open" if self.available(provider) else "open"

    def backoff_s(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1, 2, ...): exponential, full jitter."""
        cap = min(self.config.backoff_max_ms, self.config.backoff_ms * (2 ** (attempt - 1)))
        return random.uniform(0, cap) / 1000.0
