"""The Responses state in process, on the real memory store: what a request resolves and what is kept."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from fastroute.errors import BadRequest, NotFound, PayloadTooLarge
from fastroute.responses_store import ResponsesStore
from fastroute.storage.memory import MemoryStore


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def state(keyed: bool = False, max_bytes: int = 1 << 20, max_history_bytes: int = 1 << 25) -> ResponsesStore:
    return ResponsesStore(MemoryStore(), True, 60.0, max_bytes, keyed, max_history_bytes)


def answered(rid: str, text: str) -> dict[str, Any]:
    return {"id": rid, "object": "response", "status": "completed", "output": [
        {"type": "message", "id": f"msg_{rid}", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": text, "annotations": []}]}]}


async def _turns(s: ResponsesStore, key: str | None = "k1") -> dict[str, Any]:
    first = {"model": "m", "input": "one"}
    s.keep(await s.prepare(first, key), answered("resp_1", "answer one"))
    second = {"model": "m", "input": "two", "previous_response_id": "resp_1"}
    s.keep(await s.prepare(second, key), answered("resp_2", "answer two"))
    third = {"model": "m", "input": [{"role": "user", "content": "three"}], "previous_response_id": "resp_2"}
    await s.prepare(third, key)
    return third


def test_a_chain_is_put_before_the_new_input_oldest_first() -> None:
    third = run(_turns(state()))
    texts = [(i.get("role"), i["content"][0]["text"] if isinstance(i["content"], list) else i["content"])
             for i in third["input"]]
    assert texts == [("user", "one"), ("assistant", "answer one"), ("user", "two"), ("assistant", "answer two"),
                     ("user", "three")]


def test_a_chain_is_bounded_like_a_body() -> None:
    """A conversation rebuilt from the store is no bigger than what a client may send in one body."""
    run(_turns(state(max_history_bytes=4096)))  # three short turns fit
    with pytest.raises(PayloadTooLarge, match="behind previous_response_id 'resp_2' is over 600 bytes") as info:
        run(_turns(state(max_history_bytes=600)))
    assert info.value.http_status == 413 and info.value.param == "previous_response_id"


def test_a_record_is_visible_only_to_the_key_that_made_it_when_keys_are_in_use() -> None:
    s = state(keyed=True)

    async def go() -> None:
        s.keep(await s.prepare({"model": "m", "input": "secret"}, "key-a"), answered("resp_a", "ok"))
        assert (await s.response("resp_a", "key-a"))["id"] == "resp_a"
        with pytest.raises(NotFound, match="Response with id 'resp_a' not found"):
            await s.response("resp_a", "key-b")
        with pytest.raises(BadRequest, match="Previous response with id 'resp_a' not found"):
            await s.prepare({"model": "m", "input": "x", "previous_response_id": "resp_a"}, "key-b")
        with pytest.raises(NotFound, match="Item with id 'msg_resp_a' not found"):
            await s.prepare({"model": "m", "input": [{"type": "item_reference", "id": "msg_resp_a"}]}, "key-b")
        raw = await s.store.get("resp:resp_a")
        assert b"key-a" not in raw  # the owner is the key's SHA-256, never the key

    run(go())


def test_store_false_and_failed_answers_keep_nothing() -> None:
    s = state()

    async def go() -> None:
        body = {"model": "m", "input": "x", "store": False}
        kept = await s.prepare(body, None)
        assert body["store"] is False and kept.keep is False
        s.keep(kept, answered("resp_f", "no"))
        kept = await s.prepare({"model": "m", "input": "y"}, None)
        s.keep(kept, {**answered("resp_g", "broken"), "status": "failed"})
        assert len(s.store) == 0

    run(go())


def test_a_response_over_max_bytes_is_not_kept(caplog: pytest.LogCaptureFixture) -> None:
    s = state(max_bytes=2048)

    async def go() -> None:
        s.keep(await s.prepare({"model": "m", "input": "x" * 5000}, None), answered("resp_big", "ok"))
        assert len(s.store) == 0

    run(go())
    assert "over [responses] max_bytes" in caplog.text and "xxxx" not in caplog.text


def test_input_items_get_ids_and_are_listed_as_kept() -> None:
    s = state()

    async def go() -> list[dict[str, Any]]:
        body = {"model": "m", "input": [{"role": "user", "content": "hi"},
                                        {"type": "function_call_output", "call_id": "c1", "output": "done"}]}
        s.keep(await s.prepare(body, None), answered("resp_i", "ok"))
        return await s.input_items("resp_i", None)

    items = run(go())
    assert [i["id"][:4] for i in items] == ["msg_", "fco_"]
    assert orjson.loads(orjson.dumps(items))[1]["output"] == "done"


def test_the_store_off_refuses_references_and_keeps_nothing() -> None:
    s = ResponsesStore(None, False, 60.0, 1 << 20, False)

    async def go() -> None:
        body = {"model": "m", "input": "hi"}
        assert (await s.prepare(body, None)).keep is False and body["store"] is False
        with pytest.raises(BadRequest, match=r"the Responses store is off"):
            await s.prepare({"model": "m", "input": "x", "previous_response_id": "resp_1"}, None)

    run(go())
