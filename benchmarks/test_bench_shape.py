"""The request-shape check (formats/shape.py), compiled vs Python, against decoding the same body.

    pytest benchmarks/test_bench_shape.py --benchmark-group-by=group

Bodies: a short chat, and the first and second requests Claude Code and Codex send
(tests/fixtures/agents).  ``orjson.loads`` of the same bytes runs in the same group: the
check is read as a fraction of what reading the body costs anyway.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest

from fastroute import _speedups
from fastroute.formats import anthropic, openai, responses
from fastroute.formats.shape import built_with

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "agents"
SHORT = {"model": "gpt-4o-mini", "max_tokens": 32, "stream": False,
         "messages": [{"role": "system", "content": "You are helpful."},
                      {"role": "user", "content": "Say hello in five words."}]}


def _body(name: str) -> bytes:
    data = orjson.loads((FIXTURES / name).read_bytes())
    return orjson.dumps(data.get("body", data))


CASES = {
    "short-chat": (openai, orjson.dumps(SHORT)),
    "claude-code-2nd": (anthropic, _body("claude_code_2.1.197_second.json")),
    "codex-2nd": (responses, _body("codex_0.171.0_second.json")),
}


@pytest.fixture(params=["python", "compiled", "orjson.loads"])
def impl(request: pytest.FixtureRequest) -> str:
    if request.param == "compiled" and _speedups.shape_c is None:
        pytest.skip("compiled speedups not available")
    return request.param


@pytest.mark.parametrize("case", list(CASES))
def test_check_request_shape(benchmark, impl: str, case: str) -> None:  # type: ignore[no-untyped-def]
    dialect, raw = CASES[case]
    benchmark.group = f"shape-{case} ({len(raw) // 1024} KB)"
    if impl == "orjson.loads":
        benchmark(orjson.loads, raw)
        return
    module: ModuleType = _speedups.shape_c if impl == "compiled" else _speedups.shape_py
    spec = built_with(dialect.REQUEST, module)
    body: Any = orjson.loads(raw)
    assert benchmark(spec.check, body) is None
