"""Counting a conversation's input tokens (``POST /v1/messages/count_tokens`` to a non-Anthropic
provider): bpe_openai's o200k_base against the four-characters estimate.

A coding agent's conversation of 20 KB (and 200 KB): a system prompt, three tool definitions,
then turns of prose and code with tool calls and their results, generated deterministically.
The tokenizer is loaded before timing (loading it once costs about a second per worker).

    pytest benchmarks/test_bench_tokens.py --benchmark-group-by=group,param:impl --benchmark-columns=median,ops
"""

from __future__ import annotations

import random

import pytest

from fastroute.canonical import ChatRequest, Message, TextPart, Tool, ToolCall
from fastroute.tokens import TokenCounter
from test_bench_keywords import prompt  # the same deterministic prose-with-code

TOOLS = [Tool(name, f"{name.replace('_', ' ')}: a tool of the agent, with a longer description of when to use it",
              {"type": "object", "properties": {"path": {"type": "string", "description": "a file path"},
                                                "content": {"type": "string"}}, "required": ["path"]})
         for name in ("read_file", "write_file", "run_command")]


def conversation(size: int, seed: int = 7) -> ChatRequest:
    rng = random.Random(seed)
    messages: list[Message] = []
    chars = 0
    turn = 0
    while chars < size:
        user = prompt(rng.randint(200, 1200), seed + turn)
        call = ToolCall(f"call_{turn}", rng.choice(TOOLS).name, '{"path": "src/app_%d.py"}' % turn)
        result = prompt(rng.randint(500, 2500), seed + 1000 + turn)
        messages += [Message("user", [TextPart(user)]),
                     Message("assistant", [TextPart("Let me look at that file.")], tool_calls=[call]),
                     Message("tool", [TextPart(result)], tool_call_id=call.id)]
        chars += len(user) + len(result) + 40
        turn += 1
    return ChatRequest("claude-sonnet-4-6", messages, system=prompt(2000, seed - 1), tools=TOOLS)


@pytest.fixture(params=["tokenizer", "estimate"])
def impl(request: pytest.FixtureRequest) -> TokenCounter:
    counter = TokenCounter() if request.param == "tokenizer" else TokenCounter(library=None)
    counter.prepare("claude-sonnet-4-6")
    return counter


@pytest.mark.parametrize("size", [20_000, 200_000], ids=["20KB", "200KB"])
def test_count_conversation(benchmark, impl: TokenCounter, size: int) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = f"count_tokens-{size // 1000}KB"
    request = conversation(size)
    count = benchmark(impl.count, request, "claude-sonnet-4-6")
    assert count.input_tokens > size // 8
