"""Hypothesis strategies shared by the fuzz suites (``test_fuzz_parsers.py``, ``test_fuzz_server.py``).

Two sides:

- **client bodies** of the four dialects (OpenAI chat, Anthropic messages, OpenAI Responses,
  Ollama chat): first a *valid* body of realistic shape (text, images, files, tool calls and
  their results, thinking, tools, sampling fields, ``stream`` on or off), then :func:`mutated`
  breaks it: a node at any JSON path replaced by a value of the wrong type, odd content parts
  inserted, odd unicode, very long strings, deep nesting, odd keys;
- **upstream answers** of the three provider formats (OpenAI ``chat.completion`` JSON and SSE
  chunks, Anthropic message JSON and SSE events, Ollama JSON and NDJSON lines; no provider speaks
  Responses), valid and then broken: wrong shapes, missing fields, cut at any byte, garbage
  between events, bytes that are not UTF-8, odd HTTP statuses.  Each :class:`UpstreamAnswer`
  says what a correct reader must make of it (``intact``: exactly this text and these calls;
  ``must_fail``: an error; otherwise either).

Profiles: ``ci`` (the default: a fixed seed and a budget that keeps the fuzz suite near a
minute per implementation) and ``long`` (``FASTROUTE_FUZZ=long``: twenty times the examples,
a random seed, failures saved and printed as blobs to replay).  See docs/testing.md.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

# ── profiles ────────────────────────────────────────────────────────────────

#: the long run multiplies every test's budget by this
LONG_FACTOR = 20
_SUPPRESSED = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
               HealthCheck.large_base_example]
#: no "explain" phase: tracing every line while shrinking costs minutes on bodies this size
_PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True, phases=_PHASES,
                          suppress_health_check=_SUPPRESSED)
#: where the long run keeps the failures it found, replayed first by the next run (outside the repository)
DATABASE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fastroute" / "hypothesis"
settings.register_profile("long", derandomize=False, deadline=None, print_blob=True, phases=_PHASES,
                          database=DirectoryBasedExampleDatabase(DATABASE), suppress_health_check=_SUPPRESSED)
PROFILES = ("ci", "long")


def profile() -> str:
    """The profile ``FASTROUTE_FUZZ`` names (``ci`` when unset)."""
    name = os.environ.get("FASTROUTE_FUZZ", "").strip().lower() or "ci"
    if name not in PROFILES:
        raise ValueError(f"FASTROUTE_FUZZ={name!r}: one of {', '.join(PROFILES)}")
    return name


def load_profile() -> None:
    """Make the profile ``FASTROUTE_FUZZ`` names the default; call before any ``@settings``."""
    settings.load_profile(profile())


def timeout(seconds: float) -> float:
    """A test's pytest-timeout: as given in CI, longer in the long run (and for shrinking there)."""
    return seconds * LONG_FACTOR if profile() == "long" else seconds


def examples(n: int) -> int:
    """A test's budget: ``n`` examples in CI, twenty times more in the long run."""
    return n * LONG_FACTOR if profile() == "long" else n


# ── JSON helpers ────────────────────────────────────────────────────────────

JSONPath = tuple[Any, ...]


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON value, without recursion: deep nesting is on purpose, and deeper
    than orjson writes (254 levels; it reads 1024)."""
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(value, root, 0)]
    while stack:
        node, parent, key = stack.pop()
        if isinstance(node, dict):
            parent[key] = new = dict.fromkeys(node)  # the keys keep their order
            stack.extend((v, new, k) for k, v in node.items())
        elif isinstance(node, list):
            parent[key] = new = [None] * len(node)
            stack.extend((v, new, i) for i, v in enumerate(node))
        else:
            parent[key] = node
    return root[0]


def dumps(value: Any) -> bytes:
    """JSON bytes of any body here, however deep (orjson stops at 254 levels); UTF-8, not escaped."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def paths(node: Any, prefix: JSONPath = ()) -> list[JSONPath]:
    """Every JSON path in ``node``, the root ``()`` first."""
    out = [prefix]
    stack = [(node, prefix)]
    while stack:
        value, where = stack.pop()
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, child in items:
            out.append(where + (key,))
            stack.append((child, where + (key,)))
    return out


def get_at(node: Any, path: JSONPath) -> Any:
    for key in path:
        node = node[key]
    return node


def set_at(node: Any, path: JSONPath, value: Any) -> Any:
    """``node`` with the value at ``path`` replaced (in place below the root); returns the new root."""
    if not path:
        return value
    get_at(node, path[:-1])[path[-1]] = value
    return node


def brief(value: Any, depth: int = 0) -> Any:
    """``value`` small enough to read in a failure report: long strings and deep nesting elided."""
    if isinstance(value, str):
        return value if len(value) <= 80 else f"{value[:40]}…<{len(value)} chars>"
    if isinstance(value, bytes):
        return value if len(value) <= 200 else value[:100] + f"…<{len(value)} bytes>".encode()
    if depth >= 8 and isinstance(value, (dict, list)) and value:
        return f"<{type(value).__name__} nested {_depth(value)} more levels>"
    if isinstance(value, dict):
        return {k: brief(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [brief(v, depth + 1) for v in value]
    return value


def _depth(value: Any) -> int:
    """How deep ``value`` nests (without recursion)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth + 1)
            stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


def path_text(path: JSONPath) -> str:
    """``messages[1].content[0].image_url``."""
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out or "(the body)"


# ── values ──────────────────────────────────────────────────────────────────

#: strings that have broken parsers, renderers and headers elsewhere
ODD_STRINGS = [
    "", " ", "\x00", "nul\x00inside", "\u202eevil\u202c override", "שלום עולם", "مرحبا بالعالم", "日本語のテキスト",
    "😀👍🏽👨‍👩‍👧‍👦🏳️‍🌈", "\x1b[31mred\x1b[0m", "\r\n\t\x0b\x0c\x08", "line\u2028sep\u2029para", "\ufeffbom",
    "\U0010ffff\U000e0001", "\x7f\x80\x9f", "\u0301\u0301combining", "data: [DONE]\n\n", '{"json": "in a string"}',
    "</script><script>", "%s%n%x", "null", "true", "-1", "1e999", "\\u0000", "a\r\rb", "event: error\n",
]
#: numbers at the edges of what JSON, orjson and 64-bit counters take
EDGE_NUMBERS = [0, -1, 1, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1, 10**18, 1.5, -0.0, 1e308,
                -1e308, 5e-324, 0.1]

words = st.text(alphabet="abcdefghij klmnop", min_size=1, max_size=12)
text = st.one_of(words, st.sampled_from(ODD_STRINGS),
                 st.text(st.characters(exclude_categories=("Cs",)), max_size=16))
_LOWER = "abcdefghijklmnopqrstuvwxyz"
names = st.builds(str.__add__, st.sampled_from(_LOWER), st.text(alphabet=_LOWER + "0123456789_", max_size=11))
numbers = st.one_of(st.sampled_from(EDGE_NUMBERS), st.integers(-(2**63), 2**64 - 1),
                    st.floats(allow_nan=False, allow_infinity=False))
leaves = st.one_of(st.none(), st.booleans(), numbers, text)
small_json = st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                          st.dictionaries(names, inner, max_size=3)),
                          max_leaves=6)
#: what replaces a node: the wrong type for nearly any field
wrong_values = st.one_of(
    st.booleans(), st.none(), st.sampled_from(EDGE_NUMBERS), st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(ODD_STRINGS),
    st.lists(small_json, max_size=3), st.dictionaries(names, small_json, max_size=3),
    st.lists(st.none(), min_size=1, max_size=3), st.just([]), st.just({}), st.just([[]]), st.just({"": None}),
)
#: content parts no dialect expects: unknown types, known types with fields of the wrong type
odd_parts = st.one_of(
    st.builds(lambda t: {"type": t}, st.one_of(names, st.sampled_from(ODD_STRINGS))),
    st.builds(lambda t, v: {"type": t, **v}, st.sampled_from(
        ["text", "image_url", "image", "input_text", "input_image", "input_file", "file", "document", "tool_use",
         "tool_result", "thinking", "redacted_thinking", "function_call", "function_call_output", "reasoning",
         "message", "refusal", "output_text"]),
        st.dictionaries(st.sampled_from(["text", "image_url", "url", "source", "file", "file_data", "data",
                                         "content", "input", "id", "name", "arguments", "call_id", "output",
                                         "summary", "role", "thinking", "signature", "tool_use_id", "media_type",
                                         "type", "is_error", "cache_control"]),
                        st.one_of(st.lists(small_json, max_size=2), wrong_values), min_size=1, max_size=3)),
    st.builds(lambda v: {"type": v}, st.lists(small_json, max_size=2)),
    st.just({}), st.none(), st.just([]), st.sampled_from(ODD_STRINGS), st.integers(),
)

TINY_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
TINY_PDF = "JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSPj4Kc3RyZWFtCmVuZHN0cmVhbQplbmRvYmoK"
image_urls = st.sampled_from(["https://example.com/cat.png", f"data:image/png;base64,{TINY_PNG}",
                              "http://127.0.0.1:9/x.jpg?a=1&b=%20"])
tool_args = st.dictionaries(names, st.one_of(words, st.integers(-1000, 1000), st.booleans()), max_size=3)


@st.composite
def json_schema(draw: Any) -> dict[str, Any]:
    props = draw(st.dictionaries(names, st.sampled_from([{"type": "string"}, {"type": "integer"},
                                                         {"type": "string", "enum": ["a", "b"]},
                                                         {"type": "array", "items": {"type": "string"}}]),
                                 max_size=3))
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if props and draw(st.booleans()):
        schema["required"] = sorted(props)[:1]
    return schema


def optional(draw: Any, body: dict[str, Any], key: str, strategy: st.SearchStrategy[Any]) -> None:
    if draw(st.booleans()):
        body[key] = draw(strategy)


def call_id(prefix: str) -> st.SearchStrategy[str]:
    return st.text(alphabet="ABCDEFabcdef0123456789", min_size=4, max_size=10).map(prefix.__add__)


DEFAULT_MODELS = st.sampled_from(["gpt-4o-mini", "claude-sonnet-4-5", "llama3.2", "m", "o3-mini"])


# ── client bodies: OpenAI Chat Completions ──────────────────────────────────

@st.composite
def openai_body(draw: Any, models: st.SearchStrategy[str] = DEFAULT_MODELS) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": draw(st.sampled_from(["system", "developer"])), "content": draw(text)})
    tools = draw(st.lists(names, max_size=3, unique=True))
    for _ in range(draw(st.integers(0, 2))):  # earlier turns
        messages.append({"role": "user", "content": draw(openai_content())})
        if tools and draw(st.booleans()):
            calls = [{"id": draw(call_id("call_")), "type": "function",
                      "function": {"name": draw(st.sampled_from(tools)),
                                   "arguments": orjson.dumps(draw(tool_args)).decode()}}
                     for _ in range(draw(st.integers(1, 2)))]
            messages.append({"role": "assistant", "content": draw(st.one_of(st.none(), text)), "tool_calls": calls})
            for c in calls:
                messages.append({"role": "tool", "tool_call_id": c["id"], "content": draw(text)})
        else:
            messages.append({"role": "assistant", "content": draw(text)})
    messages.append({"role": "user", "content": draw(openai_content())})
    body: dict[str, Any] = {"model": draw(models), "messages": messages}
    if tools:
        body["tools"] = [{"type": "function", "function": {
            "name": name, "description": draw(text), "parameters": draw(json_schema()),
            **({"strict": draw(st.booleans())} if draw(st.booleans()) else {})}} for name in tools]
        optional(draw, body, "tool_choice", st.one_of(st.sampled_from(["auto", "none", "required"]), st.builds(
            lambda n: {"type": "function", "function": {"name": n}}, st.sampled_from(tools))))
        optional(draw, body, "parallel_tool_calls", st.booleans())
    optional(draw, body, draw(st.sampled_from(["max_tokens", "max_completion_tokens"])), st.integers(1, 4096))
    optional(draw, body, "temperature", st.floats(0, 2))
    optional(draw, body, "top_p", st.floats(0, 1))
    optional(draw, body, "stop", st.one_of(words, st.lists(words, max_size=3)))
    optional(draw, body, "seed", st.integers(0, 2**31))
    optional(draw, body, "reasoning_effort", st.sampled_from(["low", "medium", "high"]))
    optional(draw, body, "response_format", st.one_of(
        st.just({"type": "text"}), st.just({"type": "json_object"}),
        st.builds(lambda s: {"type": "json_schema", "json_schema": {"name": "out", "schema": s, "strict": True}},
                  json_schema())))
    optional(draw, body, "user", words)
    optional(draw, body, "metadata", st.dictionaries(names, words, max_size=2))
    stream = draw(st.sampled_from([None, False, True]))
    if stream is not None:
        body["stream"] = stream
        if stream and draw(st.booleans()):
            body["stream_options"] = {"include_usage": draw(st.booleans())}
    return body


@st.composite
def openai_content(draw: Any) -> Any:
    if draw(st.booleans()):
        return draw(text)
    parts = st.one_of(st.builds(lambda t: {"type": "text", "text": t}, text),
                      st.builds(lambda u: {"type": "image_url", "image_url": {"url": u}}, image_urls),
                      st.just({"type": "file", "file": {"filename": "a.pdf",
                                                        "file_data": f"data:application/pdf;base64,{TINY_PDF}"}}))
    return draw(st.lists(parts, min_size=1, max_size=3))


# ── client bodies: Anthropic Messages ───────────────────────────────────────

@st.composite
def anthropic_block(draw: Any) -> dict[str, Any]:
    return draw(st.one_of(
        st.builds(lambda t: {"type": "text", "text": t}, text),
        st.just({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": TINY_PNG}}),
        st.just({"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}),
        st.just({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": TINY_PDF},
                 "title": "a.pdf"}),
        st.builds(lambda t: {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": t}},
                  text),
        st.builds(lambda t: {"type": "text", "text": t, "cache_control": {"type": "ephemeral"}}, text),
    ))


@st.composite
def anthropic_body(draw: Any, models: st.SearchStrategy[str] = DEFAULT_MODELS) -> dict[str, Any]:
    tools = draw(st.lists(names, max_size=3, unique=True))
    messages: list[dict[str, Any]] = []

    def user_content() -> Any:
        return draw(text) if draw(st.booleans()) else draw(st.lists(anthropic_block(), min_size=1, max_size=3))

    for _ in range(draw(st.integers(0, 2))):
        messages.append({"role": "user", "content": user_content()})
        blocks: list[dict[str, Any]] = []
        if draw(st.booleans()):
            blocks.append({"type": "thinking", "thinking": draw(text), "signature": draw(words)})
        if draw(st.booleans()):
            blocks.append({"type": "redacted_thinking", "data": draw(words)})
        blocks.append({"type": "text", "text": draw(text)})
        calls = []
        if tools and draw(st.booleans()):
            calls = [{"type": "tool_use", "id": draw(call_id("toolu_")), "name": draw(st.sampled_from(tools)),
                      "input": draw(tool_args)} for _ in range(draw(st.integers(1, 2)))]
        messages.append({"role": "assistant", "content": blocks + calls})
        if calls:
            results = [{"type": "tool_result", "tool_use_id": c["id"],
                        "content": draw(st.one_of(text, st.lists(st.builds(lambda t: {"type": "text", "text": t},
                                                                           text), max_size=2))),
                        **({"is_error": True} if draw(st.booleans()) else {})} for c in calls]
            messages.append({"role": "user", "content": results + draw(st.lists(anthropic_block(), max_size=1))})
            messages.append({"role": "assistant", "content": draw(text)})
    messages.append({"role": "user", "content": user_content()})
    body: dict[str, Any] = {"model": draw(models), "max_tokens": draw(st.integers(1, 8192)), "messages": messages}
    optional(draw, body, "system", st.one_of(text, st.lists(st.builds(
        lambda t: {"type": "text", "text": t, "cache_control": {"type": "ephemeral"}}, text), min_size=1, max_size=2)))
    if tools:
        body["tools"] = [{"name": n, "description": draw(text), "input_schema": draw(json_schema())} for n in tools]
        optional(draw, body, "tool_choice", st.one_of(
            st.builds(lambda k: {"type": k}, st.sampled_from(["auto", "any", "none"])),
            st.builds(lambda n: {"type": "tool", "name": n}, st.sampled_from(tools)),
            st.just({"type": "auto", "disable_parallel_tool_use": True})))
    optional(draw, body, "temperature", st.floats(0, 1))
    optional(draw, body, "top_p", st.floats(0, 1))
    optional(draw, body, "top_k", st.integers(1, 500))
    optional(draw, body, "stop_sequences", st.lists(words, max_size=3))
    optional(draw, body, "thinking", st.one_of(st.builds(lambda n: {"type": "enabled", "budget_tokens": n},
                                                         st.integers(1024, 4096)),
                                               st.just({"type": "disabled"})))
    optional(draw, body, "output_config", st.one_of(
        st.builds(lambda e: {"effort": e}, st.sampled_from(["low", "medium", "high"])),
        st.builds(lambda s: {"format": {"type": "json_schema", "schema": s}}, json_schema())))
    optional(draw, body, "metadata", st.builds(lambda u: {"user_id": u}, words))
    optional(draw, body, "stream", st.booleans())
    return body


# ── client bodies: OpenAI Responses ─────────────────────────────────────────

@st.composite
def responses_part(draw: Any, role: str) -> dict[str, Any]:
    if role == "assistant":
        return draw(st.one_of(st.builds(lambda t: {"type": "output_text", "text": t}, text),
                              st.builds(lambda t: {"type": "refusal", "refusal": t}, text)))
    return draw(st.one_of(
        st.builds(lambda t: {"type": "input_text", "text": t}, text),
        st.builds(lambda u: {"type": "input_image", "image_url": u}, image_urls),
        st.just({"type": "input_file", "filename": "a.pdf", "file_data": f"data:application/pdf;base64,{TINY_PDF}"}),
    ))


@st.composite
def responses_body(draw: Any, models: st.SearchStrategy[str] = DEFAULT_MODELS) -> dict[str, Any]:
    tools = draw(st.lists(names, max_size=3, unique=True))
    body: dict[str, Any] = {"model": draw(models)}
    if draw(st.booleans()):
        body["input"] = draw(words)
    else:
        items: list[dict[str, Any]] = []
        if draw(st.booleans()):
            items.append({"type": "message", "role": draw(st.sampled_from(["system", "developer"])),
                          "content": draw(text)})
        for _ in range(draw(st.integers(0, 2))):
            items.append({"type": "message", "role": "user", "content": draw(st.one_of(
                text, st.lists(responses_part("user"), min_size=1, max_size=3)))})
            if draw(st.booleans()):
                items.append({"type": "reasoning", "id": "rs_" + draw(words).replace(" ", ""),
                              "summary": [{"type": "summary_text", "text": draw(text)}]})
            items.append({"role": "assistant", "content": draw(st.lists(responses_part("assistant"), min_size=1,
                                                                        max_size=2))})
            if tools and draw(st.booleans()):
                cid = draw(call_id("call_"))
                items.append({"type": "function_call", "call_id": cid, "name": draw(st.sampled_from(tools)),
                              "arguments": orjson.dumps(draw(tool_args)).decode()})
                items.append({"type": "function_call_output", "call_id": cid, "output": draw(text)})
        items.append({"type": "message", "role": "user", "content": draw(st.one_of(
            text, st.lists(responses_part("user"), min_size=1, max_size=3)))})
        body["input"] = items
    optional(draw, body, "instructions", text)
    if tools:
        body["tools"] = [{"type": "function", "name": n, "description": draw(text), "parameters": draw(json_schema()),
                          **({"strict": draw(st.booleans())} if draw(st.booleans()) else {})} for n in tools]
        if draw(st.booleans()):
            body["tools"].append({"type": "custom", "name": "free_" + draw(names)})
        optional(draw, body, "tool_choice", st.one_of(st.sampled_from(["auto", "none", "required"]), st.builds(
            lambda n: {"type": "function", "name": n}, st.sampled_from(tools))))
        optional(draw, body, "parallel_tool_calls", st.booleans())
    optional(draw, body, "max_output_tokens", st.integers(16, 4096))
    optional(draw, body, "temperature", st.floats(0, 2))
    optional(draw, body, "top_p", st.floats(0, 1))
    optional(draw, body, "text", st.one_of(
        st.just({"format": {"type": "text"}}), st.builds(lambda v: {"verbosity": v}, st.sampled_from(["low", "high"])),
        st.builds(lambda s: {"format": {"type": "json_schema", "name": "out", "schema": s, "strict": True}},
                  json_schema())))
    optional(draw, body, "reasoning", st.builds(lambda e: {"effort": e}, st.sampled_from(["low", "medium", "high"])))
    optional(draw, body, "store", st.just(False))
    optional(draw, body, "metadata", st.dictionaries(names, words, max_size=2))
    optional(draw, body, "stream", st.booleans())
    return body


# ── client bodies: Ollama chat ──────────────────────────────────────────────

@st.composite
def ollama_body(draw: Any, models: st.SearchStrategy[str] = DEFAULT_MODELS) -> dict[str, Any]:
    tools = draw(st.lists(names, max_size=3, unique=True))
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(text)})

    def user() -> dict[str, Any]:
        m: dict[str, Any] = {"role": "user", "content": draw(text)}
        if draw(st.booleans()):
            m["images"] = [TINY_PNG] * draw(st.integers(1, 2))
        return m

    for _ in range(draw(st.integers(0, 2))):
        messages.append(user())
        m: dict[str, Any] = {"role": "assistant", "content": draw(text)}
        if draw(st.booleans()):
            m["thinking"] = draw(text)
        if tools and draw(st.booleans()):
            name = draw(st.sampled_from(tools))
            m["tool_calls"] = [{"function": {"name": name, "arguments": draw(tool_args)}}]
            messages.append(m)
            messages.append({"role": "tool", "content": draw(text), "tool_name": name})
        else:
            messages.append(m)
    messages.append(user())
    body: dict[str, Any] = {"model": draw(models), "messages": messages}
    if tools:
        body["tools"] = [{"type": "function", "function": {"name": n, "description": draw(text),
                                                           "parameters": draw(json_schema())}} for n in tools]
    if draw(st.booleans()):
        options: dict[str, Any] = {}
        optional(draw, options, "temperature", st.floats(0, 2))
        optional(draw, options, "top_p", st.floats(0, 1))
        optional(draw, options, "top_k", st.integers(1, 100))
        optional(draw, options, "num_predict", st.integers(1, 4096))
        optional(draw, options, "seed", st.integers(0, 2**31))
        optional(draw, options, "stop", st.lists(words, max_size=2))
        optional(draw, options, "num_ctx", st.integers(512, 32768))
        body["options"] = options
    optional(draw, body, "format", st.one_of(st.just("json"), json_schema()))
    optional(draw, body, "think", st.one_of(st.booleans(), st.sampled_from(["low", "high"])))
    optional(draw, body, "keep_alive", st.sampled_from(["5m", 0, -1]))
    optional(draw, body, "stream", st.booleans())
    return body


VALID_BODIES = {"openai": openai_body, "anthropic": anthropic_body, "responses": responses_body,
                "ollama": ollama_body}


# ── mutations ───────────────────────────────────────────────────────────────

MUTATIONS = ("wrong_type", "wrong_type", "wrong_type", "odd_part", "unicode", "long_string", "deep", "odd_key",
             "delete")
#: where deep nesting is most likely to hurt: schemas, arguments, content
_DEEP_TARGETS = frozenset({"parameters", "input_schema", "schema", "content", "input", "arguments", "format",
                           "tool_choice", "output", "metadata", "options", "thinking", "text"})


@dataclass
class Mutated:
    """A body and what was done to it (``changes``: (kind, path) pairs; none: the valid body)."""

    body: Any
    changes: list[tuple[str, JSONPath]] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.changes

    def __repr__(self) -> str:
        return f"Mutated(changes={self.changes!r}, body={brief(self.body)!r})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # what Hypothesis prints for a failure
        p.text(repr(self))


def nested(depth: int, shape: str, leaf: Any = "deep") -> Any:
    value = leaf
    for i in range(depth):
        if shape == "list" or (shape == "mixed" and i % 2):
            value = [value]
        else:
            value = {"type": "object", "properties": {"x": value}} if shape == "schema" else {"a": value}
    return value


@st.composite
def mutate_once(draw: Any, body: Any) -> tuple[Any, tuple[str, JSONPath]]:
    kind = draw(st.sampled_from(MUTATIONS))
    every = paths(body)
    strings = [p for p in every if p and isinstance(get_at(body, p), str)]
    lists = [p for p in every if isinstance(get_at(body, p), list)]
    dicts = [p for p in every if isinstance(get_at(body, p), dict)]
    keyed = [p for p in every if p and isinstance(p[-1], str)]
    if kind == "unicode" and strings:
        path = ("model",) if ("model",) in strings and draw(st.booleans()) else draw(st.sampled_from(strings))
        return set_at(body, path, draw(st.one_of(st.sampled_from(ODD_STRINGS), st.builds(
            lambda a, b: a + b, st.sampled_from(ODD_STRINGS), st.sampled_from(ODD_STRINGS))))), (kind, path)
    if kind == "long_string" and strings:
        path = draw(st.sampled_from(strings))
        unit = draw(st.sampled_from(["x", "é", "😀", "\x00", "ab\n", " "]))
        return set_at(body, path, unit * draw(st.sampled_from([4096, 70_000, 300_000]))), (kind, path)
    if kind == "odd_part" and lists:
        path = draw(st.sampled_from(lists))
        target = get_at(body, path)
        target.insert(draw(st.integers(0, len(target))), copy_json(draw(odd_parts)))
        return body, (kind, path)
    if kind == "deep":
        preferred = [p for p in every if p and isinstance(p[-1], str) and p[-1] in _DEEP_TARGETS]
        path = draw(st.sampled_from(preferred or every[1:] or every))
        depth = draw(st.sampled_from([100, 200, 300]))  # the server reads 128 levels; orjson writes 254
        return set_at(body, path, nested(depth, draw(st.sampled_from(["list", "dict", "mixed", "schema"])))), \
            (f"deep {depth}", path)
    if kind == "odd_key" and dicts:
        path = draw(st.sampled_from(dicts))
        key = draw(st.one_of(st.sampled_from(ODD_STRINGS), names))
        get_at(body, path)[key] = copy_json(draw(small_json))
        return body, (kind, path + (key,))
    if kind == "delete" and keyed:
        path = draw(st.sampled_from(keyed))
        del get_at(body, path[:-1])[path[-1]]
        return body, (kind, path)
    path = draw(st.sampled_from(every))  # wrong_type, and the fallback of every other kind
    return set_at(body, path, copy_json(draw(wrong_values))), ("wrong_type", path)


@st.composite
def mutated(draw: Any, valid: st.SearchStrategy[Any], valid_share: float = 0.1) -> Mutated:
    """A valid body from ``valid``, then one or two mutations (none in about ``valid_share`` of cases)."""
    body = copy_json(draw(valid))
    if draw(st.floats(0, 1)) < valid_share:
        return Mutated(body)
    changes: list[tuple[str, JSONPath]] = []
    for _ in range(draw(st.integers(1, 2))):
        body, change = draw(mutate_once(body))
        changes = [change] if not change[1] else [*changes, change]  # a new root: what came before is gone
    return Mutated(body, changes)


def request_bodies(dialect: str, models: st.SearchStrategy[str] = DEFAULT_MODELS) -> st.SearchStrategy[Mutated]:
    return mutated(VALID_BODIES[dialect](models=models))


# ── upstream answers ────────────────────────────────────────────────────────

@dataclass
class Plan:
    """What an answer says, whatever its format."""

    id: str
    model: str
    text: str
    thinking: str
    calls: list[tuple[str, str, dict[str, Any]]]  # (id, name, arguments)
    input_tokens: int
    output_tokens: int
    stop: str  # canonical: stop | length | tool_calls


@st.composite
def plans(draw: Any) -> Plan:
    calls = [(draw(call_id("call_")), draw(names), draw(tool_args)) for _ in range(draw(st.integers(0, 2)))]
    stop = "tool_calls" if calls else draw(st.sampled_from(["stop", "length"]))
    return Plan(id=draw(call_id("id")), model=draw(st.sampled_from(["up-model", "up/model:7b", "模型"])),
                text=draw(st.one_of(st.just(""), text, st.lists(words, max_size=4).map(" ".join))),
                thinking=draw(st.one_of(st.just(""), words)), calls=calls,
                input_tokens=draw(st.integers(0, 10**6)), output_tokens=draw(st.integers(0, 10**6)), stop=stop)


@dataclass
class Event:
    """One event of a stream, before framing: its JSON payload (or raw bytes), SSE name, and role."""

    payload: Any
    name: str | None = None  # the SSE ``event:`` line (Anthropic)
    raw: bytes | None = None  # bytes sent as they are (``[DONE]``, garbage)
    terminal: bool = False  # its arrival says the answer is complete


def _pieces(draw: Any, value: str) -> list[str]:
    """``value`` cut into one to three pieces (never empty)."""
    if len(value) < 2:
        return [value]
    cuts = sorted(set(draw(st.lists(st.integers(1, len(value) - 1), max_size=2))))
    bounds = [0, *cuts, len(value)]
    return [value[a:b] for a, b in itertools.pairwise(bounds)]


_OPENAI_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}
_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def openai_json(p: Plan) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": p.text or (None if p.calls else "")}
    if p.thinking:
        message["reasoning_content"] = p.thinking
    if p.calls:
        message["tool_calls"] = [{"id": i, "type": "function", "function": {"name": n, "arguments": orjson.dumps(a)
                                                                             .decode()}} for i, n, a in p.calls]
    return {"id": p.id, "object": "chat.completion", "created": 1700000000, "model": p.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _OPENAI_FINISH[p.stop]}],
            "usage": {"prompt_tokens": p.input_tokens, "completion_tokens": p.output_tokens,
                      "total_tokens": p.input_tokens + p.output_tokens}}


@st.composite
def openai_events(draw: Any, p: Plan) -> list[Event]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": p.id, "object": "chat.completion.chunk", "created": 1700000000, "model": p.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    events = [Event(chunk({"role": "assistant", "content": ""}))]
    events += [Event(chunk({"reasoning_content": piece})) for piece in _pieces(draw, p.thinking) if piece]
    events += [Event(chunk({"content": piece})) for piece in _pieces(draw, p.text) if piece]
    for index, (cid, name, args) in enumerate(p.calls):
        raw = orjson.dumps(args).decode()
        first, *rest = _pieces(draw, raw)
        events.append(Event(chunk({"tool_calls": [{"index": index, "id": cid, "type": "function",
                                                   "function": {"name": name, "arguments": first}}]})))
        events += [Event(chunk({"tool_calls": [{"index": index, "function": {"arguments": r}}]})) for r in rest]
    events.append(Event(chunk({}, _OPENAI_FINISH[p.stop]), terminal=True))
    events.append(Event({"id": p.id, "object": "chat.completion.chunk", "created": 1700000000, "model": p.model,
                         "choices": [], "usage": {"prompt_tokens": p.input_tokens,
                                                  "completion_tokens": p.output_tokens,
                                                  "total_tokens": p.input_tokens + p.output_tokens}}))
    events.append(Event(None, raw=b"[DONE]", terminal=True))
    return events


def anthropic_json(p: Plan) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if p.thinking:
        content.append({"type": "thinking", "thinking": p.thinking, "signature": "sig=="})
    if p.text:
        content.append({"type": "text", "text": p.text})
    content += [{"type": "tool_use", "id": i, "name": n, "input": a} for i, n, a in p.calls]
    return {"id": p.id, "type": "message", "role": "assistant", "model": p.model, "content": content,
            "stop_reason": _ANTHROPIC_STOP[p.stop], "stop_sequence": None,
            "usage": {"input_tokens": p.input_tokens, "output_tokens": p.output_tokens}}


@st.composite
def anthropic_events(draw: Any, p: Plan) -> list[Event]:
    def ev(name: str, payload: dict[str, Any], terminal: bool = False) -> Event:
        return Event({"type": name, **payload}, name=name, terminal=terminal)

    events = [ev("message_start", {"message": {
        "id": p.id, "type": "message", "role": "assistant", "model": p.model, "content": [], "stop_reason": None,
        "stop_sequence": None, "usage": {"input_tokens": p.input_tokens, "output_tokens": 1}}}), ev("ping", {})]
    index = 0
    if p.thinking:
        events.append(ev("content_block_start", {"index": index, "content_block": {"type": "thinking",
                                                                                   "thinking": ""}}))
        events += [ev("content_block_delta", {"index": index, "delta": {"type": "thinking_delta", "thinking": t}})
                   for t in _pieces(draw, p.thinking)]
        events.append(ev("content_block_delta", {"index": index, "delta": {"type": "signature_delta",
                                                                           "signature": "sig=="}}))
        events.append(ev("content_block_stop", {"index": index}))
        index += 1
    if p.text:
        events.append(ev("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}}))
        events += [ev("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": t}})
                   for t in _pieces(draw, p.text)]
        events.append(ev("content_block_stop", {"index": index}))
        index += 1
    for cid, name, args in p.calls:
        events.append(ev("content_block_start", {"index": index, "content_block": {
            "type": "tool_use", "id": cid, "name": name, "input": {}}}))
        # no arguments: Anthropic sends one empty delta (or none); else the JSON in pieces
        pieces = draw(st.sampled_from([[""], [], ["{}"]])) if not args else _pieces(draw, orjson.dumps(args).decode())
        events += [ev("content_block_delta", {"index": index, "delta": {"type": "input_json_delta",
                                                                        "partial_json": piece}}) for piece in pieces]
        events.append(ev("content_block_stop", {"index": index}))
        index += 1
    events.append(ev("message_delta", {"delta": {"stop_reason": _ANTHROPIC_STOP[p.stop], "stop_sequence": None},
                                       "usage": {"output_tokens": p.output_tokens}}, terminal=True))
    events.append(ev("message_stop", {}, terminal=True))
    return events


def ollama_json(p: Plan) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": p.text}
    if p.thinking:
        message["thinking"] = p.thinking
    if p.calls:
        message["tool_calls"] = [{"function": {"name": n, "arguments": a}} for _, n, a in p.calls]
    return {"model": p.model, "created_at": "2026-01-01T00:00:00Z", "message": message, "done": True,
            "done_reason": "length" if p.stop == "length" else "stop", "total_duration": 10,
            "prompt_eval_count": p.input_tokens, "eval_count": p.output_tokens}


@st.composite
def ollama_events(draw: Any, p: Plan) -> list[Event]:
    base = {"model": p.model, "created_at": "2026-01-01T00:00:00Z", "done": False}
    events = [Event({**base, "message": {"role": "assistant", "content": "", "thinking": t}})
              for t in _pieces(draw, p.thinking) if t]
    events += [Event({**base, "message": {"role": "assistant", "content": t}}) for t in _pieces(draw, p.text) if t]
    if p.calls:
        events.append(Event({**base, "message": {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": n, "arguments": a}} for _, n, a in p.calls]}}))
    final = ollama_json(Plan(p.id, p.model, "", "", [], p.input_tokens, p.output_tokens, p.stop))
    events.append(Event(final, terminal=True))
    return events


ANSWER_JSON = {"openai": openai_json, "anthropic": anthropic_json, "ollama": ollama_json}
ANSWER_EVENTS = {"openai": openai_events, "anthropic": anthropic_events, "ollama": ollama_events}
PROVIDER_FORMATS = tuple(ANSWER_JSON)
CONTENT_TYPES = {"openai": "text/event-stream", "anthropic": "text/event-stream", "ollama": "application/x-ndjson"}


def frame(fmt: str, ev: Event) -> tuple[bytes, int]:
    """One event on the wire, and the offset just past its content (a cut there still reads it whole)."""
    data = ev.raw if ev.raw is not None else orjson.dumps(ev.payload)
    if fmt == "ollama":
        return data + b"\n", len(data)
    head = (b"event: " + ev.name.encode() + b"\n" if ev.name else b"") + b"data: "
    return head + data + b"\n\n", len(head) + len(data)


#: garbage that the framing itself ignores (comments, unknown fields, blank lines): the answer is unchanged
IGNORED_SSE = [b": keep-alive\n\n", b":\n\n", b"\n\n", b"event: ping\n\n", b"retry: 1000\n\n", b"id: 7\n\n",
               b"unknown-field: x\n\n", b": \xff\xfe not utf-8 in a comment\n\n", b"\r\n\r\n", b"data:\n\n",
               b"data: \n\n"]
IGNORED_NDJSON = [b"\n", b"  \n", b"\r\n"]
#: garbage a reader must refuse: events that are not JSON objects, bytes that are not UTF-8
BAD_SSE = [b"data: not json\n\n", b"data: {\"cut\n\n", b"data: 5\n\n", b"data: null\n\n", b"data: []\n\n",
           b"data: \xff\xfe\xfd\n\n", b"data: \"\\ud800\"\n\n", b"data: {\"a\": 1}{\"b\": 2}\n\n",
           b"<html>502 Bad Gateway</html>\n\ndata: }\n\n"]
BAD_NDJSON = [b"not json\n", b"{\"cut\n", b"\xff\xfe\xfd\n", b"<html>502</html>\n", b"{\"a\": 1}{\"b\": 2}\n",
              b"data: {}\n", b"5\n", b"null\n", b"[]\n"]
ODD_STATUSES = [500, 502, 503, 400, 404, 422, 429]
#: what upstreams answer with an error status: their own error shapes, odd ones, and no JSON at all
ODD_ERROR_BODIES = [b"", b"<html>oops</html>", b"{}", b'{"error": 5}', b"\xff\xfe", b"[]", b"null",
                    b'{"error": {"message": "overloaded", "type": "overloaded"}}', b'{"error": "model not found"}',
                    b'{"type": "error"}', b'{"type": "error", "error": {"type": "overloaded_error", "message": "x"}}',
                    # an empty message; the provider's own error shape with fields of the wrong type
                    b'{"error": ""}', b'{"error": {"message": "", "type": "x"}}', b'{"error": {"code": 500}}',
                    b'{"error": {"message": ["odd"]}}', b'{"error": {"message": "why", "type": ["odd"]}}',
                    b'{"type": "error", "error": {"type": 5, "message": null}}']


@dataclass
class UpstreamAnswer:
    """What a scripted upstream sends, and what a correct reader makes of it."""

    fmt: str
    stream: bool
    #: the bytes, in the writes the upstream makes
    chunks: list[bytes]
    plan: Plan
    status: int = 200
    #: exactly ``plan``, however it was split or padded with what the framing ignores
    intact: bool = True
    #: a reader must end with an error (cut before the end, bytes that are not JSON, an odd status)
    must_fail: bool = False
    #: what was done, for the report
    changes: list[str] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def __repr__(self) -> str:
        return (f"UpstreamAnswer(fmt={self.fmt!r}, stream={self.stream}, status={self.status}, intact={self.intact}, "
                f"must_fail={self.must_fail}, changes={self.changes!r}, reads={len(self.chunks)}, "
                f"body={brief(self.body)!r}, plan={self.plan!r})")

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.fmt] if self.stream else "application/json"


@st.composite
def _split(draw: Any, data: bytes) -> list[bytes]:
    """``data`` in the writes an upstream might make: whole, a few pieces, or byte by byte."""
    if len(data) < 2:
        return [data]
    how = draw(st.sampled_from(["whole", "pieces", "pieces", "bytes"]))
    if how == "whole":
        return [data]
    if how == "bytes" and len(data) <= 400:
        return [data[i:i + 1] for i in range(len(data))]
    cuts = sorted(set(draw(st.lists(st.integers(1, len(data) - 1), max_size=8))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


_JSON_MUTATIONS = ("wrong_type", "wrong_type", "delete", "odd_key")


@st.composite
def _break_payload(draw: Any, payload: Any) -> tuple[Any, str]:
    every = paths(payload)
    kind = draw(st.sampled_from(_JSON_MUTATIONS))
    keyed = [p for p in every if p and isinstance(p[-1], str)]
    dicts = [p for p in every if isinstance(get_at(payload, p), dict)]
    if kind == "delete" and keyed:
        path = draw(st.sampled_from(keyed))
        del get_at(payload, path[:-1])[path[-1]]
        return payload, f"delete {path_text(path)}"
    if kind == "odd_key" and dicts:
        path = draw(st.sampled_from(dicts))
        key = draw(st.one_of(names, st.sampled_from(ODD_STRINGS)))
        get_at(payload, path)[key] = copy_json(draw(small_json))
        return payload, f"add {path_text(path + (key,))}"
    path = draw(st.sampled_from(every))
    return set_at(payload, path, copy_json(draw(wrong_values))), f"{path_text(path)} = wrong type"


@st.composite
def upstream_answers(draw: Any, fmt: str | None = None, stream: bool | None = None,
                     statuses: bool = True) -> UpstreamAnswer:
    """An answer of a provider format, valid (about one in five) or broken in one of many ways."""
    fmt = fmt or draw(st.sampled_from(PROVIDER_FORMATS))
    stream = draw(st.booleans()) if stream is None else stream
    p = draw(plans())
    how = draw(st.sampled_from(["intact", "intact", "shape", "shape", "shape", "cut", "garbage", "ignored",
                                "not_utf8", "status"] if statuses else
                               ["intact", "intact", "shape", "shape", "shape", "cut", "garbage", "ignored",
                                "not_utf8"]))
    if how == "status":
        body = draw(st.one_of(st.sampled_from(ODD_ERROR_BODIES), st.binary(max_size=40)))
        return UpstreamAnswer(fmt, stream, [body], p, status=draw(st.sampled_from(ODD_STATUSES)), intact=False,
                              must_fail=True, changes=["status"])
    if not stream:
        payload = ANSWER_JSON[fmt](p)
        changes: list[str] = []
        if how == "shape":
            payload, change = draw(_break_payload(payload))
            changes.append(change)
        data = orjson.dumps(payload)
        answer = UpstreamAnswer(fmt, False, [], p, intact=how not in ("shape", "cut", "not_utf8", "garbage"),
                                changes=changes)
        if how in ("cut", "garbage") and data:
            data = data[:draw(st.integers(0, len(data) - 1))] + (draw(st.sampled_from([b"", b"garbage", b"}{"]))
                                                                 if how == "garbage" else b"")
            answer.must_fail, answer.changes = True, [how]
        elif how == "not_utf8":
            at = draw(st.integers(0, len(data)))
            data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"])) + data[at:]
            answer.must_fail, answer.changes = True, ["not utf-8"]
        elif how == "ignored":
            data = b" \n\t" + data + b"\r\n "  # whitespace around JSON is JSON
        answer.chunks = draw(_split(data))
        return answer
    events = draw(ANSWER_EVENTS[fmt](p))
    answer = UpstreamAnswer(fmt, True, [], p)
    if how == "shape":
        i = draw(st.integers(0, len(events) - 1))
        if events[i].raw is None:
            events[i].payload, change = draw(_break_payload(events[i].payload))
            answer.changes.append(f"event {i}: {change}")
            answer.intact = False
    wire: list[bytes] = []
    ends: list[int] = []  # per event: the offset past its content
    for ev in events:
        data, content_end = frame(fmt, ev)
        ends.append(sum(map(len, wire)) + content_end)
        wire.append(data)
    if how in ("garbage", "ignored"):
        at = draw(st.integers(0, len(wire)))
        pool = {"garbage": BAD_NDJSON if fmt == "ollama" else BAD_SSE,
                "ignored": IGNORED_NDJSON if fmt == "ollama" else IGNORED_SSE}[how]
        junk = draw(st.sampled_from(pool))
        wire.insert(at, junk)
        answer.changes.append(f"{how} before event {at}: {junk!r}")
        if how == "garbage" and at < len(wire) - 1:  # after the stream's own end nothing is read
            answer.intact, answer.must_fail = False, True
    data = b"".join(wire)
    if how == "cut":
        k = draw(st.integers(0, len(data) - 1))
        terminal_end = min(end for end, ev in zip(ends, events) if ev.terminal)
        data = data[:k]
        answer.changes.append(f"cut at byte {k} of {len(b''.join(wire))}")
        answer.intact = False
        answer.must_fail = k < terminal_end
    elif how == "not_utf8":
        i = draw(st.integers(0, len(events) - 1))
        start = sum(map(len, wire[:i]))
        at = draw(st.integers(start + len(wire[i]) // 2, start + max(len(wire[i]) - 3, len(wire[i]) // 2)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + data[at:]
        answer.changes.append(f"not utf-8 in event {i}")
        answer.intact, answer.must_fail = False, True
    answer.chunks = draw(_split(data))
    return answer
