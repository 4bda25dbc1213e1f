"""Request shapes (fastroute/formats/shape.py): the walk of both implementations, and each dialect's words."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastroute import _speedups
from fastroute.errors import BadRequest
from fastroute.formats import anthropic, ollama, openai, responses
from fastroute.formats.shape import built_with

IMPLEMENTATIONS = [pytest.param(_speedups.shape_py, id="python"),
                   pytest.param(_speedups.shape_c, id="compiled",
                                marks=pytest.mark.skipif(_speedups.shape_c is None, reason="not compiled"))]


def schema(m: ModuleType) -> Any:
    """Every kind of spec, built from one implementation's classes."""
    s = m.Types(frozenset({str}), "a string")
    n = m.Types(frozenset({int, float}), "a number")
    part = m.Tagged("type", {"text": m.Obj({"text": s}, required=("text",)),
                             "image": m.Obj({"url": m.Obj({"href": s}, required=("href",))})})
    part.add("nested", m.Obj({"inner": m.Arr(part)}))
    message = m.Obj({"role": m.OneOf("user", "assistant"), "content": m.Either(s, m.Arr(part)),
                     "weight": n}, required=("role",))
    return m.Obj({"model": m.Text(), "messages": m.Arr(message, min_items=1), "flag": m.Types(frozenset({bool}),
                                                                                              "a boolean")},
                 required=("model", "messages"))


def outcome(spec: Any, value: Any) -> tuple[str, ...]:
    try:
        spec.check(value)
    except ValueError as err:  # each implementation has its own ShapeError class
        return (err.kind, err.path(), err.path("dots"), err.describe())
    return ("ok",)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False)
    | st.sampled_from(["", "user", "assistant", "text", "image", "nested", "x"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["model", "messages", "role", "content", "type", "text", "url", "href", "inner", "weight",
                         "flag", "other"]), inner, max_size=5),
    max_leaves=30)
near_valid = st.fixed_dictionaries({"model": st.sampled_from(["m", "", 5]), "messages": st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "wizard", None]),
                           "content": json_values}), max_size=3)}, optional={"flag": json_values})


@pytest.mark.skipif(_speedups.shape_c is None, reason="not compiled")
@settings(max_examples=400, derandomize=True, deadline=None)
@given(st.one_of(json_values, near_valid))
def test_both_implementations_agree(value: Any) -> None:
    assert outcome(schema(_speedups.shape_c), value) == outcome(schema(_speedups.shape_py), value)


def _paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*at, i))
    return out


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, *rest = path
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = _replaced(value[head], tuple(rest), new)
    return copy


VALID = {
    "openai": (openai, {"model": "m", "stream": True, "temperature": 0.2, "stop": ["x"], "tools": [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}], "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"},
                                     {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}]}),
    "anthropic": (anthropic, {"model": "m", "max_tokens": 10, "system": [{"type": "text", "text": "s"}], "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image", "source": {
            "type": "base64", "media_type": "image/png", "data": "AA=="}}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
            {"type": "text", "text": "ok"}]}]}], "tools": [{"name": "f", "input_schema": {"type": "object"}}]}),
    "responses": (responses, {"model": "m", "instructions": "s", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "ok"}],
        "tools": [{"type": "function", "name": "f", "parameters": {}}], "text": {"format": {"type": "text"}}}),
    "ollama": (ollama, {"model": "m", "options": {"temperature": 0.1, "stop": ["x"]}, "messages": [
        {"role": "user", "content": "hi", "images": ["AA=="]},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]},
        {"role": "tool", "content": "ok", "tool_name": "f"}]}),
}
odd_values = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.floats(allow_nan=False), st.text(max_size=3),
                       st.lists(st.none() | st.integers(), max_size=2),
                       st.dictionaries(st.sampled_from(["type", "text", "x"]), st.none() | st.text(max_size=2),
                                       max_size=2))


@pytest.mark.skipif(_speedups.shape_c is None, reason="not compiled")
@pytest.mark.parametrize("name", list(VALID))
@settings(max_examples=150, derandomize=True, deadline=None)
@given(data=st.data())
def test_both_implementations_agree_on_each_dialect(name: str, data: st.DataObject) -> None:
    """Any one value of a valid body replaced by an odd one: both walks say the same thing."""
    dialect, body = VALID[name]
    path = data.draw(st.sampled_from(_paths(body)))
    mutated = _replaced(body, path, data.draw(odd_values))
    py, c = built_with(dialect.REQUEST, _speedups.shape_py), built_with(dialect.REQUEST, _speedups.shape_c)
    assert outcome(py, mutated) == outcome(c, mutated)
    assert outcome(py, body) == ("ok",)


@pytest.mark.parametrize("m", IMPLEMENTATIONS)
@pytest.mark.parametrize("value, expected", [
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, ("ok",)),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "other", "x": [1]}]}]}, ("ok",)),
    ({"model": "m", "messages": [{"role": "user", "content": "hi", "weight": None}], "flag": None}, ("ok",)),
    ([], ("type", "", "", "expected an object, got an array")),
    ({"messages": []}, ("missing", "model", "model", "is required (a non-empty string)")),
    ({"model": "", "messages": [{}]}, ("empty", "model", "model", "expected a non-empty string, got an empty one")),
    ({"model": "m", "messages": []}, ("empty", "messages", "messages", "expected a non-empty array, got an empty one")),
    ({"model": "m", "messages": [{"role": "wizard"}]},
     ("choice", "messages[0].role", "messages.0.role", "expected one of 'user', 'assistant', got 'wizard'")),
    ({"model": "m", "messages": [{"role": "user", "content": 5}]},
     ("type", "messages[0].content", "messages.0.content", "expected a string or an array, got an integer")),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                {"type": "image", "url": ["x"]}]}]},
     ("type", "messages[0].content[1].url", "messages.0.content.1.url", "expected an object, got an array")),
    ({"model": "m", "messages": [{"role": "user", "content": [{"text": "a"}]}]},
     ("tag", "messages[0].content[0]", "messages.0.content.0", "expected an object with a string 'type', got null")),
    ({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "nested", "inner": [{"type": "text", "text": True}]}]}]},
     ("type", "messages[0].content[0].inner[0].text", "messages.0.content.0.inner.0.text",
      "expected a string, got a boolean")),
    ({"model": "m", "messages": [{"role": "user", "weight": True}]},
     ("type", "messages[0].weight", "messages.0.weight", "expected a number, got a boolean")),
    ({"model": "m", "messages": [{"role": "user"}], "flag": 1},
     ("type", "flag", "flag", "expected a boolean, got an integer")),
])
def test_the_walk_names_the_path(m: ModuleType, value: Any, expected: tuple[str, ...]) -> None:
    assert outcome(schema(m), value) == expected


USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("dialect, body, message, param", [
    (openai, {"model": "m", "messages": USER, "tools": True}, "tools: expected an array, got a boolean", "tools"),
    (openai, {"model": "m", "messages": [{"role": ["user"], "content": "hi"}]},
     "messages[0].role: expected one of 'assistant', 'developer', 'function', 'system', 'tool', 'user', got an array",
     "messages[0].role"),
    (openai, {"model": "m", "messages": USER, "temperature": "hot"},
     "temperature: expected a number, got a string", "temperature"),
    (openai, {"model": "m", "messages": USER, "stop": [1]}, "stop[0]: expected a string, got an integer", "stop[0]"),
    (anthropic, {"model": "m", "messages": [{"role": "user", "content": [{"type": "image", "source": []}]}]},
     "messages.0.content.0.source: Input should be a valid dictionary", "messages.0.content.0.source"),
    (anthropic, {"model": "m", "messages": [{"role": "user", "content": [{"type": "tool_result", "content": [
        {"type": "text", "text": ["x"]}]}]}]},
     "messages.0.content.0.content.0.text: Input should be a valid string", "messages.0.content.0.content.0.text"),
    (anthropic, {"model": "m", "messages": [{"role": "user", "content": [5]}]},
     "messages.0.content.0: Input should be a valid dictionary", "messages.0.content.0"),
    (anthropic, {"model": "m", "messages": [{"role": "user", "content": [{"text": "x"}]}]},
     "messages.0.content.0: Unable to extract tag using discriminator 'type'", "messages.0.content.0"),
    (anthropic, {"model": "m", "messages": [{"role": "user"}]}, "messages.0.content: Field required",
     "messages.0.content"),
    (anthropic, {"model": "m", "messages": USER, "tools": [True]}, "tools.0: Input should be a valid dictionary",
     "tools.0"),
    (anthropic, {"model": "m", "messages": USER, "system": 5},
     "system: Input should be a valid string or a valid list", "system"),
    (responses, {"model": "m", "input": [{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": {"a": 1}}]}]},
     "input[0].content[0].text: expected a string, got an object", "input[0].content[0].text"),
    (responses, {"model": "m", "input": "hi", "tools": [{"type": "function", "parameters": []}]},
     "tools[0].parameters: expected an object, got an array", "tools[0].parameters"),
    (responses, {"model": "m", "input": [{"type": "function_call_output", "output": 5}]},
     "input[0].output: expected a string or an array, got an integer", "input[0].output"),
    (ollama, {"model": "m", "messages": USER, "options": [None]}, "options: expected an object, got an array",
     "options"),
    (ollama, {"model": "m", "messages": [{"role": "assistant", "tool_calls": True}]},
     "messages[0].tool_calls: expected an array, got a boolean", "messages[0].tool_calls"),
    (ollama, {"model": "m", "messages": [{"role": "user", "content": "hi", "images": [1]}]},
     "messages[0].images[0]: expected a string, got an integer", "messages[0].images[0]"),
])
def test_each_dialect_words_it_its_way(dialect: ModuleType, body: dict[str, Any], message: str, param: str) -> None:
    with pytest.raises(BadRequest) as info:
        dialect.parse_request(body)
    assert info.value.message == message
    assert info.value.param == param
    assert info.value.http_status == 400


@pytest.mark.parametrize("dialect, body", [
    (openai, {"model": "m", "messages": USER, "temperature": None, "tools": None, "stop": None, "n": None}),
    (openai, {"model": "m", "messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": None, "type": "function", "function": {"name": "f", "arguments": None}}]}]}),
    (anthropic, {"model": "m", "messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": None, "name": None, "input": None}, {"type": "thinking", "thinking": None}]}],
        "system": None, "max_tokens": None}),
    (responses, {"model": "m", "input": [{"type": "reasoning", "summary": [{"text": None}]},
                                         {"type": "function_call", "name": None, "arguments": None}]}),
    (ollama, {"model": "m", "messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"function": {"name": None, "arguments": None}}]}], "options": None, "stream": None}),
])
def test_null_is_a_field_left_out(dialect: ModuleType, body: dict[str, Any]) -> None:
    """Every SDK sends null for what it leaves out: accepted and read as absent, never a crash."""
    request = dialect.parse_request(body)
    assert request.model == "m"
    for m in request.messages:
        assert all(isinstance(c.id, str) and isinstance(c.name, str) and isinstance(c.arguments, str)
                   for c in m.tool_calls)


def test_a_source_only_anthropic_has_goes_to_anthropic_as_it_came_and_is_refused_elsewhere_by_name() -> None:
    """A Files API image (or any source type fastroute does not model) is no 400 on the way in: an
    Anthropic provider gets the block untouched; another format refuses it, naming it, clipped."""
    from fastroute.config import config_from_dict
    from fastroute.providers import build_providers
    from fastroute.providers.fit import fit

    cfg = config_from_dict({"providers": [{"name": "o", "format": "openai", "base_url": "http://o/v1"},
                                          {"name": "a", "format": "anthropic", "base_url": "http://a"}],
                            "routers": [{"type": "prefix", "model_prefix": "", "provider": "o"}]})
    providers = build_providers(cfg, None)
    block = {"type": "image", "source": {"type": "file", "file_id": "file_0123"}}
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [block]}]}
    sent = anthropic.render_request(fit(anthropic.parse_request(body), providers["a"], "m").request, False)
    assert sent["messages"][0]["content"] == [block]
    odd = {"type": "image", "source": {"type": "f" * 5000}}
    for blocks, shown in (([block], "'file'"), ([odd], repr("f" * 40))):
        request = anthropic.parse_request({**body, "messages": [{"role": "user", "content": blocks}]})
        with pytest.raises(BadRequest) as info:
            fit(request, providers["o"], "m")
        assert info.value.message == (f"messages[0]: content block type 'image' with a source of type {shown} has "
                                      "no counterpart in the format of provider 'o'")


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@pytest.mark.parametrize("m", IMPLEMENTATIONS)
@settings(max_examples=300, derandomize=True, deadline=None)
@given(value=json_values, limit=st.integers(1, 8))
def test_nests_deeper_counts_levels_exactly(m: ModuleType, value: Any, limit: int) -> None:
    """The nesting check (limits.check_depth's first look) of both implementations, against a count."""
    assert m.nests_deeper(value, limit) is (_depth(value) > limit)
