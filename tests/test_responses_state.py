"""Stateful Responses through a real fastroute: store, previous_response_id, item_reference, the
retrieval endpoints, across workers and restarts (SQLite), to every provider format."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import FastrouteProcess, stub_config
from tests.stub_upstream import StubUpstream

FORMATS = ("stub-model", "a/stub-model", "o/stub-llama")


def config(stub: StubUpstream, tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "fastroute.toml"
    path.write_text(stub_config(stub) + f'\n[storage]\nkind = "sqlite"\npath = "{tmp_path / "state.sqlite3"}"\n'
                    + extra)
    return path


def gpt(proc: FastrouteProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proc.url}/v1", api_key="client-key", max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def stateful(stub: StubUpstream, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("responses-state")
    proc = FastrouteProcess([str(config(stub, tmp)), "--workers", "2"], workers=2).start()
    yield proc
    proc.stop()


def sent_texts(stub: StubUpstream) -> list[str]:
    """Every text the upstream received in its last request, in order, whatever its format."""
    body = stub.requests[-1].body
    out = []
    for m in body.get("messages") or ():
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out += [b.get("text") or b.get("content") or "" for b in content if isinstance(b, dict)]
    return [t for t in out if isinstance(t, str) and t]


@pytest.mark.parametrize("model", FORMATS)
@pytest.mark.parametrize("stream", [False, True])
def test_previous_response_id_continues_the_conversation(stateful: FastrouteProcess, fresh_stub: StubUpstream,
                                                         model: str, stream: bool) -> None:
    c = gpt(stateful)
    first = c.responses.create(model=model, input="my name is Ada", instructions="be brief")
    assert first.store is True and first.previous_response_id is None
    # two workers: the follow-up may land on either; the SQLite file is shared
    if stream:
        events = list(c.responses.create(model=model, input="what is my name?", previous_response_id=first.id,
                                         stream=True))
        second = [e for e in events if e.type == "response.completed"][0].response
    else:
        second = c.responses.create(model=model, input="what is my name?", previous_response_id=first.id)
    assert second.previous_response_id == first.id and second.store is True
    texts = sent_texts(fresh_stub)
    assert texts[-3:] == ["my name is Ada", first.output_text, "what is my name?"]
    third = c.responses.create(model=model, input="and again?", previous_response_id=second.id)
    assert sent_texts(fresh_stub)[-5:] == ["my name is Ada", first.output_text, "what is my name?",
                                           second.output_text, "and again?"]
    assert third.output_text == "stub: and again?"


@pytest.mark.parametrize("model", FORMATS)
def test_item_references_resolve_to_what_fastroute_issued(stateful: FastrouteProcess, fresh_stub: StubUpstream,
                                                          model: str) -> None:
    c = gpt(stateful)
    first = c.responses.create(model=model, input="hello big world")
    message = first.output[0]
    assert message.type == "message" and message.id.startswith("msg_")
    resp = httpx.post(f"{stateful.url}/v1/responses", timeout=30, json={
        "model": model, "input": [{"role": "user", "content": "hello big world"},
                                  {"type": "item_reference", "id": message.id},
                                  {"role": "user", "content": "say more"}]})
    assert resp.status_code == 200, resp.text
    assert sent_texts(fresh_stub)[-3:] == ["hello big world", first.output_text, "say more"]


def test_a_tool_loop_by_reference(stateful: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    tool = {"type": "function", "name": "get_weather", "description": "weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    c = gpt(stateful)
    first = c.responses.create(model="a/stub-model", input="weather in Paris?", tools=[tool])
    call = [o for o in first.output if o.type == "function_call"][0]
    second = c.responses.create(model="a/stub-model", tools=[tool], input=[
        {"role": "user", "content": "weather in Paris?"}, {"type": "item_reference", "id": call.id},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert second.output_text == "tool said: sunny"
    blocks = fresh_stub.requests[-1].body["messages"][1]["content"]
    assert blocks[-1]["type"] == "tool_use" and blocks[-1]["id"] == call.call_id


def test_retrieve_list_input_items_and_delete(stateful: FastrouteProcess) -> None:
    c = gpt(stateful)
    first = c.responses.create(model="echo", input="keep me")
    got = c.responses.retrieve(first.id)
    assert got.id == first.id and got.output_text == "keep me"
    items = c.responses.input_items.list(first.id)
    assert [i.type for i in items.data] == ["message"] and items.data[0].content[0].text == "keep me"
    assert c.responses.delete(first.id) is None
    with pytest.raises(openai.NotFoundError, match=f"Response with id '{first.id}' not found"):
        c.responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError, match=f"Previous response with id '{first.id}' not found"):
        c.responses.create(model="echo", input="again", previous_response_id=first.id)
    with pytest.raises(openai.NotFoundError, match="Item with id 'msg_nope' not found"):
        c.responses.create(model="echo", input=[{"type": "item_reference", "id": "msg_nope"}])


def test_store_false_keeps_nothing(stateful: FastrouteProcess) -> None:
    c = gpt(stateful)
    first = c.responses.create(model="echo", input="forget me", store=False)
    assert first.store is False
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError, match="not found"):
        c.responses.create(model="echo", input="again", previous_response_id=first.id)


def test_previous_response_id_survives_a_restart_and_expires(stub: StubUpstream, tmp_path: Path,
                                                             fresh_stub: StubUpstream) -> None:
    path = config(stub, tmp_path, "\n[responses]\nttl_s = 3\n")
    proc = FastrouteProcess([str(path)]).start()
    try:
        first = gpt(proc).responses.create(model="stub-model", input="remember the restart")
    finally:
        assert proc.stop() == 0
    proc = FastrouteProcess([str(path)]).start()
    try:
        second = gpt(proc).responses.create(model="stub-model", input="what did I say?",
                                            previous_response_id=first.id)
        assert sent_texts(fresh_stub)[-3:] == ["remember the restart", first.output_text, "what did I say?"]
        assert second.previous_response_id == first.id
        deadline = time.monotonic() + 30
        while True:  # the record's time to live is 3 s: then it is gone, as OpenAI's expire
            try:
                gpt(proc).responses.retrieve(first.id)
            except openai.NotFoundError:
                break
            assert time.monotonic() < deadline, "the stored response never expired"
            time.sleep(0.5)
    finally:
        proc.stop()


def test_the_store_turned_off_refuses_references_clearly(stub: StubUpstream, tmp_path: Path) -> None:
    proc = FastrouteProcess([str(config(stub, tmp_path, "\n[responses]\nstore = false\n"))]).start()
    try:
        first = gpt(proc).responses.create(model="echo", input="hi")
        assert first.store is False  # it says what really happened
        with pytest.raises(openai.BadRequestError, match=r"the Responses store is off"):
            gpt(proc).responses.create(model="echo", input="again", previous_response_id=first.id)
        with pytest.raises(openai.BadRequestError, match=r"the Responses store is off"):
            gpt(proc).responses.create(model="echo", input=[{"type": "item_reference", "id": "msg_x"}])
    finally:
        proc.stop()


def test_previous_response_id_across_instances_sharing_redis(stub: StubUpstream, tmp_path: Path,
                                                             fresh_stub: StubUpstream) -> None:
    from tests.conftest import free_port
    from tests.test_events_redis import PASSWORD, RedisServer

    redis = RedisServer(free_port(), PASSWORD)
    storage = (f'\n[storage]\nkind = "redis"\nredis_url = "redis://127.0.0.1:{redis.port}/0"\n'
               'redis_password_env = "FASTROUTE_TEST_REDIS_PW"\n')
    env = {"FASTROUTE_TEST_REDIS_PW": PASSWORD}
    procs = []
    try:
        for name in ("a", "b"):
            path = tmp_path / f"{name}.toml"
            path.write_text(stub_config(stub) + storage)
            procs.append(FastrouteProcess([str(path)], env=env).start())
        first = gpt(procs[0]).responses.create(model="a/stub-model", input="kept in redis")
        second = gpt(procs[1]).responses.create(model="a/stub-model", input="and now?",
                                                previous_response_id=first.id)
        assert second.previous_response_id == first.id
        assert sent_texts(fresh_stub)[-3:] == ["kept in redis", first.output_text, "and now?"]
        assert gpt(procs[1]).responses.retrieve(first.id).output_text == first.output_text
    finally:
        for proc in procs:
            proc.stop()
        redis.stop()
    assert all(PASSWORD not in proc.output for proc in procs)
