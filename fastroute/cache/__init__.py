"""The exact cache (``[cache]``): an answer kept under a hash of the canonical request and its route,
served again without calling the provider.

- :mod:`.key`: the key (what of a request changes its answer, hashed).
- :mod:`.entry`: what is kept (the canonical answer, and the upstream's own bytes on the fast path),
  and the collector that assembles a streamed answer.
- :mod:`.memory`: the LRU of one worker, bounded in entries and bytes, with a TTL.
- :mod:`.redis`: the same in Redis (shared by every instance), through fastroute's RESP client.
- :mod:`.exact`: :class:`ExactCache`, what the pipeline calls.
"""

from __future__ import annotations

from fastroute.cache.exact import BYPASS, HIT, MISS, ExactCache, open_cache

__all__ = ["BYPASS", "HIT", "MISS", "ExactCache", "open_cache"]
