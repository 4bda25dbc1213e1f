"""Which events of the feed a viewer may see.

Events carry prompts and answers.  Where client keys are required, a viewer who presents a
client key sees the requests made with that key — every event of each, from its ``start``
(which names the key) to its ``complete`` — and the admin token sees everything, as does
anyone where no key is required.  A :class:`KeyScope` follows the ids of its key's requests
(bounded: the oldest are forgotten first, as a request that never completed would be)."""

from __future__ import annotations

from collections import OrderedDict

import orjson

#: request ids a viewer follows at once, at most
MAX_FOLLOWED = 10_000


class KeyScope:
    __slots__ = ("_ids", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._ids: OrderedDict[str, None] = OrderedDict()

    def allows(self, data: bytes) -> bool:
        """Is this encoded event one of the key's requests'?"""
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(event, dict):
            return False
        kind, rid = event.get("type"), event.get("id")
        if kind == "start":
            if event.get("key_name") != self.name or not isinstance(rid, str):
                return False
            self._ids[rid] = None
            if len(self._ids) > MAX_FOLLOWED:
                self._ids.popitem(last=False)
            return True
        if kind == "complete":  # it names its key itself (its start may be older than the history)
            if isinstance(rid, str):
                self._ids.pop(rid, None)
            return event.get("key_name") == self.name
        return isinstance(rid, str) and rid in self._ids
