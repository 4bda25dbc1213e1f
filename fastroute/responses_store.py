"""The Responses API's state, kept by fastroute: ``store``, ``previous_response_id``, ``item_reference``.

A request whose ``store`` is true or absent (OpenAI's default) is kept when its answer is complete:
the response object fastroute sent, its own input items (references resolved, every item given
an id) and the id of the response it continued.  Its output items are kept one by one too, under
the ids fastroute issued, so a later request can point at them:

- ``item_reference`` items are replaced by the items they name;
- ``previous_response_id`` puts the conversation before the new input: for each response of the
  chain, oldest first, its input and then its output.

Then the request is parsed and routed as if the client had sent it all, to any provider format,
streamed or not.  ``store: false`` keeps nothing, as OpenAI does.  Keys in the store:

    resp:<id>   {"owner", "response", "input", "previous_response_id"}
    item:<id>   {"owner", "item"}

Everything is kept for ``[responses] ttl_s``; a response whose record would be over ``max_bytes``
is not kept (said once in the log).  Writes are queued (the answer never waits for them); a worker
reads its own at once, and a read that misses looks again after short pauses, for a write another
worker queued a moment ago.  When keys are in use a record is visible only to the
key that made it (its SHA-256 is the owner); nothing stored reaches a log line.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import orjson

from fastroute.errors import BadRequest, NotFound, PayloadTooLarge

log = logging.getLogger("fastroute.responses")

#: how far back a previous_response_id chain is followed
MAX_CHAIN = 1000
#: pauses before a missing id is called unknown (a write another worker queued a moment ago)
RETRY_PAUSES_S = (0.02, 0.1)
_ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs",
              "custom_tool_call": "ctc", "custom_tool_call_output": "ctco"}


@dataclass(slots=True)
class Kept:
    """What a request brings to the store: filled in before it is served, written after."""

    owner: str | None
    keep: bool
    #: its own input items, resolved and with ids (what ``input_items`` lists)
    input: list[dict[str, Any]] = field(default_factory=list)
    previous_response_id: str | None = None


class ResponsesStore:
    def __init__(self, store: Any, enabled: bool, ttl_s: float, max_bytes: int, keyed: bool,
                 max_history_bytes: int = 32 * 1024 * 1024) -> None:
        #: the storage seam (fastroute.storage); None when nothing is kept
        self.store = store if enabled else None
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        #: a conversation rebuilt from previous_response_id is at most this big (what a client may send)
        self.max_history_bytes = max_history_bytes
        #: keys are in use: a record is its creator's only
        self.keyed = keyed
        self._said_too_big = False

    # before the request is served --------------------------------------------

    async def prepare(self, body: dict[str, Any], client_key: str | None) -> Kept:
        """Resolve ``item_reference`` and ``previous_response_id`` in ``body`` (in place) and say
        what to keep.  Sets ``body["store"]`` to what will really happen, for the answer to say."""
        owner = self.owner(client_key)
        previous = body.get("previous_response_id")
        inp = body.get("input")
        wants = body.get("store", True) is not False
        kept = Kept(owner, keep=wants and self.store is not None, previous_response_id=previous)
        body["store"] = kept.keep
        referenced = isinstance(inp, list) and any(_is_reference(i) for i in inp)
        if self.store is None:
            if previous is not None or referenced:
                what = "previous_response_id" if previous is not None else "input"
                raise BadRequest(f"'{what}': the Responses store is off on this fastroute ([responses] store = "
                                 "false): send the whole conversation in 'input'", param=what)
            return kept
        if previous is not None and not isinstance(previous, str):
            raise BadRequest("'previous_response_id' must be a string", param="previous_response_id")
        if not (previous or referenced or kept.keep):
            return kept
        own = ([{"type": "message", "role": "user", "content": [{"type": "input_text", "text": inp}]}]
               if isinstance(inp, str) else list(inp) if isinstance(inp, list) else [])
        for i, item in enumerate(own):
            if _is_reference(item):
                own[i] = await self._item(item.get("id"), owner, f"input[{i}]")
        if kept.keep:
            kept.input = [_with_id(item) for item in own]
        history = await self._history(previous, owner) if previous else []
        if previous or referenced:
            body["input"] = history + own
        return kept

    async def _history(self, previous: str, owner: str | None) -> list[dict[str, Any]]:
        records = []
        rid: str | None = previous
        size = 0
        while rid and len(records) < MAX_CHAIN:
            found = await self._get_sized(f"resp:{rid}", owner)
            if found is None:
                if not records:  # OpenAI's words for it
                    raise BadRequest(f"Previous response with id '{rid}' not found.", param="previous_response_id",
                                     code="previous_response_not_found")
                break  # an older link expired: the conversation starts where the store still has it
            record, raw_size = found
            size += raw_size
            if size > self.max_history_bytes:
                raise PayloadTooLarge(f"the conversation behind previous_response_id '{previous}' is over "
                                      f"{self.max_history_bytes} bytes (the request body limit); start a new one "
                                      "or send the turns that matter in 'input'", param="previous_response_id")
            records.append(record)
            rid = record.get("previous_response_id")
        history: list[dict[str, Any]] = []
        for record in reversed(records):
            history += record.get("input") or []
            history += (record.get("response") or {}).get("output") or []
        return history

    async def _item(self, item_id: Any, owner: str | None, where: str) -> dict[str, Any]:
        record = await self._get(f"item:{item_id}", owner) if isinstance(item_id, str) else None
        if record is None:
            raise NotFound(f"Item with id '{item_id}' not found.", param=where)
        return record["item"]

    # after it was answered -----------------------------------------------------

    def keep(self, kept: Kept, response: dict[str, Any]) -> None:
        """Queue the answered response for later requests (never waits)."""
        if not kept.keep or self.store is None or response.get("status") == "failed":
            return
        rid = response.get("id")
        record = orjson.dumps({"owner": kept.owner, "response": response, "input": kept.input,
                               "previous_response_id": kept.previous_response_id})
        if len(record) > self.max_bytes:
            if not self._said_too_big:
                log.warning("a response's state (%d bytes) is over [responses] max_bytes (%d): not kept",
                            len(record), self.max_bytes)
                self._said_too_big = True
            return
        self.store.put(f"resp:{rid}", record, self.ttl_s)
        for item in [*kept.input, *(response.get("output") or ())]:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                self.store.put(f"item:{item['id']}", orjson.dumps({"owner": kept.owner, "item": item}), self.ttl_s)

    # the endpoints ---------------------------------------------------------------

    async def response(self, rid: str, client_key: str | None) -> dict[str, Any]:
        return (await self._record(rid, client_key))["response"]

    async def input_items(self, rid: str, client_key: str | None) -> list[dict[str, Any]]:
        return (await self._record(rid, client_key)).get("input") or []

    async def delete(self, rid: str, client_key: str | None) -> None:
        await self._record(rid, client_key)  # 404 for an unknown id, or one of another key
        if self.store is not None:
            await self.store.delete(f"resp:{rid}")

    async def _record(self, rid: str, client_key: str | None) -> dict[str, Any]:
        record = await self._get(f"resp:{rid}", self.owner(client_key)) if self.store is not None else None
        if record is None:
            raise NotFound(f"Response with id '{rid}' not found.", param="response_id")
        return record

    # ------------------------------------------------------------------------------

    def owner(self, client_key: str | None) -> str | None:
        if not self.keyed or not client_key:
            return None
        return hashlib.sha256(client_key.encode("utf-8", "surrogatepass")).hexdigest()

    async def _get(self, key: str, owner: str | None) -> dict[str, Any] | None:
        """A record, if it is there and ``owner``'s; a miss waits for queued writes first."""
        found = await self._get_sized(key, owner)
        return found[0] if found is not None else None

    async def _get_sized(self, key: str, owner: str | None) -> tuple[dict[str, Any], int] | None:
        """:meth:`_get`, with the record's stored size in bytes."""
        assert self.store is not None
        raw = await self.store.get(key)
        for pause in RETRY_PAUSES_S if raw is None else ():  # another worker's write, queued a moment ago
            await asyncio.sleep(pause)
            raw = await self.store.get(key)
            if raw is not None:
                break
        if raw is None:
            return None
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(record, dict) or record.get("owner") != owner:
            return None  # another key's: as if it were not there
        return record, len(raw)


def _is_reference(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type") == "item_reference"


def _with_id(item: Any) -> Any:
    """An input item as it is kept and listed: with an id (fastroute's when the client gave none)."""
    if not isinstance(item, dict) or isinstance(item.get("id"), str):
        return item
    kind = item.get("type", "message")
    return {"id": f"{_ID_PREFIX.get(kind, 'item')}_{os.urandom(12).hex()}", **item}
