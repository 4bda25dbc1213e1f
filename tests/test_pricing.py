"""Prices and costs (fastroute.pricing): the config's [pricing] tables, the built-in table and the
script that makes it, the lookup order, and micro-dollars from each dialect's real usage shape."""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType

import orjson
import pytest

from fastroute import _speedups
from fastroute.canonical import Usage
from fastroute.errors import ConfigError
from fastroute.formats import anthropic as anthropic_format
from fastroute.formats import openai as openai_format
from fastroute.pricing import (
    Price,
    PriceTable,
    Pricing,
    cost_micros,
    load_table,
    parse_pricing,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_prices", ROOT / "scripts" / "gen_prices.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_prices = _load_script()


@pytest.fixture(params=["python", "compiled"])
def decoders(request: pytest.FixtureRequest) -> ModuleType:
    if request.param == "python":
        return _speedups.decode_py
    if _speedups.decode_c is None:
        pytest.skip("compiled speedups not built or FASTROUTE_NO_EXTENSIONS set")
    return _speedups.decode_c


# ── [pricing] in the config ─────────────────────────────────────────────────

def test_parse_pricing_from_toml() -> None:
    doc = tomllib.loads("""
        [pricing."gpt-4o"]
        prompt_cost_per_million = 2.5
        completion_cost_per_million = 10
        cached_prompt_cost_per_million = 1.25

        [pricing."anthropic/claude-sonnet-4-5"]
        prompt_cost_per_million = 3
        completion_cost_per_million = 15
        cached_prompt_cost_per_million = 0.3
        cache_write_cost_per_million = 3.75
    """)
    prices = parse_pricing(doc["pricing"])
    assert prices == {"gpt-4o": Price(2.5, 10.0, 1.25, None),
                      "anthropic/claude-sonnet-4-5": Price(3.0, 15.0, 0.3, 3.75)}
    assert all(type(v) is float for v in (prices["gpt-4o"].prompt, prices["gpt-4o"].completion))
    assert parse_pricing({}) == {}


@pytest.mark.parametrize(("raw", "path", "problem"), [
    ({"gpt-4o": {"prompt_cost_per_million": "x", "completion_cost_per_million": 1}},
     'pricing."gpt-4o".prompt_cost_per_million', "expected a number ≥ 0, got string 'x'"),
    ({"gpt-4o": {"prompt_cost_per_million": -1, "completion_cost_per_million": 1}},
     'pricing."gpt-4o".prompt_cost_per_million', "expected a number ≥ 0, got integer -1"),
    ({"gpt-4o": {"prompt_cost_per_million": 1, "completion_cost_per_million": True}},
     'pricing."gpt-4o".completion_cost_per_million', "expected a number ≥ 0, got boolean True"),
    ({"gpt-4o": {"prompt_cost_per_million": 1, "completion_cost_per_million": float("inf")}},
     'pricing."gpt-4o".completion_cost_per_million', "expected a number ≥ 0, got float inf"),
    ({"gpt-4o": {"prompt_cost_per_million": 1, "completion_cost_per_million": 1,
                 "cache_write_cost_per_million": float("nan")}},
     'pricing."gpt-4o".cache_write_cost_per_million', "expected a number ≥ 0, got float nan"),
    ({"gpt-4o": {"prompt_cost_per_million": 1}},
     'pricing."gpt-4o".completion_cost_per_million', "missing required key"),
    ({"gpt-4o": {"prompt_cost_per_million": 1, "completion_cost_per_million": 1, "cached_cost_per_million": 1}},
     'pricing."gpt-4o".cached_cost_per_million', "unknown key (did you mean 'cached_prompt_cost_per_million'?)"),
    ({"gpt-4o": {"prompt_cost_per_million": 1, "completion_cost_per_million": 1, "cost_per_1m_tokens": 1}},
     'pricing."gpt-4o".cost_per_1m_tokens', "unknown key"),
    ({"gpt-4o": 2.5}, 'pricing."gpt-4o"', "expected a table, got float 2.5"),
    ({"": {"prompt_cost_per_million": 1, "completion_cost_per_million": 1}}, 'pricing.""', "a model name cannot be empty"),
    ({'a "quoted" name': {"prompt_cost_per_million": 1}},
     'pricing."a \\"quoted\\" name".completion_cost_per_million', "missing required key"),
])
def test_parse_pricing_names_the_key(raw: dict, path: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_pricing(raw, source="fastroute.toml")
    assert info.value.path == path
    assert info.value.source == "fastroute.toml"
    assert info.value.problem.startswith(problem)
    assert str(info.value).startswith(f"fastroute.toml: {path}: {problem}")


def test_parse_pricing_lists_the_allowed_keys_and_takes_a_path() -> None:
    with pytest.raises(ConfigError) as info:
        parse_pricing({"m": {"prompt": 1}}, path="overrides.pricing")
    assert info.value.path == 'overrides.pricing."m".prompt'
    assert "allowed: cache_write_cost_per_million, cached_prompt_cost_per_million, completion_cost_per_million, " \
           "prompt_cost_per_million" in info.value.problem
    with pytest.raises(ConfigError) as info:
        parse_pricing([1, 2])  # type: ignore[arg-type]
    assert (info.value.path, info.value.problem) == ("pricing", "expected a table, got array [1, 2]")


def test_price_refuses_a_negative_number() -> None:
    with pytest.raises(ValueError, match="cached_prompt"):
        Price(1.0, 1.0, cached_prompt=-0.1)


# ── lookup order ────────────────────────────────────────────────────────────

A, B, C, D, E, F, G = (Price(float(n), float(n)) for n in range(1, 8))


def small_pricing(**kwargs: object) -> Pricing:
    table = {"gpt-4o": A, "claude-sonnet-4-5-20250929": B, "claude-sonnet-4-5": C,
             "groq/llama-3.3-70b-versatile": D, "mistral/mistral-large-latest": E,
             "together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo": F,
             # one name, two hosts, two prices: ambiguous without the host
             "cerebras/qwen-3-32b": F, "fireworks_ai/qwen-3-32b": G}
    return Pricing(table=table, **kwargs)  # type: ignore[arg-type]


def test_lookup_order() -> None:
    override, per_provider = Price(9.0, 9.0), Price(8.0, 8.0)
    p = small_pricing(overrides={"gpt-4o": override, "azure/gpt-4o": per_provider}, providers={"openai": 5.0})
    # the config first, the provider-qualified key before the bare one
    assert p.price_for("azure", "gpt-4o") is per_provider
    assert p.price_for("openai", "gpt-4o") is override
    assert p.price_for(None, "gpt-4o") is override
    # the built-in table's name as it is, a dated one included
    assert p.price_for("anthropic", "claude-sonnet-4-5-20250929") is B
    assert p.price_for("anthropic", "claude-sonnet-4-5") is C
    # the provider's prefix added
    assert p.price_for("groq", "llama-3.3-70b-versatile") is D
    assert p.price_for("Mistral", "mistral-large-latest") is E
    # another prefix's entry by the same name (a provider named otherwise, or none)
    assert p.price_for("my-groq", "llama-3.3-70b-versatile") is D
    assert p.price_for(None, "meta-llama/llama-3.3-70b-instruct-turbo") is F  # case-insensitive
    # the model's own prefix stripped
    assert p.price_for("openrouter", "anthropic/claude-sonnet-4-5") is C
    assert p.price_for("openrouter", "anthropic/claude-sonnet-4-5-20250929") is B
    assert p.price_for("x", "groq/llama-3.3-70b-versatile") is D  # as it is
    # last, the provider's blended price, for input and output alike
    assert p.price_for("openai", "gpt-5-unknown") == Price(5.0, 5.0)
    assert p.price_for("nobody", "gpt-5-unknown") is None
    assert p.price_for(None, "gpt-5-unknown") is None


def test_a_name_two_hosts_price_differently_is_left_to_the_host() -> None:
    p = small_pricing(providers={"local": 0.0})
    assert p.price_for("cerebras", "qwen-3-32b") is F
    assert p.price_for("fireworks_ai", "qwen-3-32b") is G
    assert p.price_for("someone", "qwen-3-32b") is None
    assert p.price_for("local", "qwen-3-32b") == Price(0.0, 0.0)  # the provider's own (free) price


def test_a_dated_name_is_not_guessed_from_the_undated_one() -> None:
    # gpt-4o-2024-05-13 cost twice gpt-4o: a snapshot the table lacks is not priced as another
    assert small_pricing().price_for("openai", "gpt-4o-2099-01-01") is None


def test_lookups_are_kept_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    p = small_pricing(max_cached=3)
    calls: list[tuple[str | None, str]] = []
    resolve = Pricing._resolve

    def counting(self: Pricing, provider: str | None, model: str) -> Price | None:
        calls.append((provider, model))
        return resolve(self, provider, model)

    monkeypatch.setattr(Pricing, "_resolve", counting)
    for _ in range(3):
        assert p.price_for("openai", "gpt-4o") is A
        assert p.price_for("openai", "unknown") is None  # a miss is kept too
    assert calls == [("openai", "gpt-4o"), ("openai", "unknown")]
    for i in range(100):  # a client sending made-up names
        p.price_for("openai", f"made-up-{i}")
    assert len(p._cache) == 3
    assert p.price_for("openai", "gpt-4o") is A  # still right once forgotten
    assert calls[-1] == ("openai", "gpt-4o")


def test_cost_helper() -> None:
    p = small_pricing(providers={"openai": 5.0})
    assert p.cost("openai", "gpt-4o", Usage(input_tokens=1000, output_tokens=1000)) == 2000
    assert p.cost("nobody", "unknown", Usage(input_tokens=1000)) is None


# ── cost ────────────────────────────────────────────────────────────────────

GPT_4O = Price(2.5, 10.0, cached_prompt=1.25)
SONNET = Price(3.0, 15.0, cached_prompt=0.3, cache_write=3.75)


def test_cached_reads_and_cache_writes_have_their_own_prices() -> None:
    usage = Usage(input_tokens=10_000, output_tokens=500, cached_input_tokens=6_000, cache_creation_tokens=3_000)
    # 1,000 fresh x 3 + 6,000 read x 0.3 + 3,000 written x 3.75 + 500 out x 15
    assert cost_micros(SONNET, usage) == 3_000 + 1_800 + 11_250 + 7_500
    # without cached and cache-write prices both are prompt tokens
    assert cost_micros(Price(3.0, 15.0), usage) == 30_000 + 7_500
    assert cost_micros(Price(3.0, 15.0, cached_prompt=0.3), usage) == 3_000 + 1_800 + 9_000 + 7_500
    assert cost_micros(Price(3.0, 15.0, cache_write=3.75), usage) == 3_000 + 18_000 + 11_250 + 7_500


def test_reasoning_tokens_are_not_counted_twice() -> None:
    assert cost_micros(GPT_4O, Usage(output_tokens=1000, reasoning_tokens=800)) == 10_000


def test_inconsistent_cache_counts_price_no_negative_input() -> None:
    assert cost_micros(SONNET, Usage(input_tokens=100, cached_input_tokens=1000)) == 300


def test_rounded_half_up_once_at_the_end() -> None:
    assert cost_micros(Price(0.5, 0.5), Usage(input_tokens=1)) == 1  # 0.5 up
    assert cost_micros(Price(0.4, 0.4), Usage(input_tokens=1)) == 0
    assert cost_micros(Price(0.5, 0.5), Usage(input_tokens=3)) == 2  # 1.5 up
    # 0.5 + 0.5 = 1, not 1 + 1
    assert cost_micros(Price(0.5, 0.5), Usage(input_tokens=1, output_tokens=1)) == 1
    # exact: 100 x 0.145 is 14.5 (floats say 14.499999999999998)
    assert 100 * 0.145 < 14.5
    assert cost_micros(Price(0.145, 0.0), Usage(input_tokens=100)) == 15
    assert cost_micros(Price(0.0, 0.0), Usage(input_tokens=10**9, output_tokens=10**9)) == 0
    assert type(cost_micros(GPT_4O, Usage(input_tokens=7))) is int


def test_provider_fallback_costs_what_the_seed_logged() -> None:
    p = Pricing(providers={"openai": 5.0}, table={})
    usage = Usage(input_tokens=12_345, output_tokens=678, cached_input_tokens=10_000)
    seed_usd = round((usage.input_tokens + usage.output_tokens) * 5.0 / 1e6, 8)  # recorder.py's formula
    assert p.cost("openai", "any-model", usage) == round(seed_usd * 1e6)


# ── each dialect's usage, through fastroute's own decoders ─────────────────

def test_openai_answer_cached_tokens_are_a_part_of_prompt_tokens() -> None:
    body = orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 2000, "completion_tokens": 100, "total_tokens": 2100,
                                   "prompt_tokens_details": {"cached_tokens": 1536},
                                   "completion_tokens_details": {"reasoning_tokens": 40}}})
    usage = openai_format.parse_response(body).usage
    assert (usage.input_tokens, usage.cached_input_tokens, usage.cache_creation_tokens) == (2000, 1536, 0)
    # 464 fresh x 2.5 + 1536 cached x 1.25 + 100 out x 10
    assert cost_micros(GPT_4O, usage) == 1160 + 1920 + 1000


def test_openai_stream_usage(decoders: ModuleType) -> None:
    events = decoders.OpenAIStreamDecoder("test").feed((FIXTURES / "openai_tools_stream.sse").read_bytes())
    usage = [e.usage for e in events if e.kind == "usage"][-1]
    assert (usage.input_tokens, usage.cached_input_tokens, usage.output_tokens) == (82, 64, 41)
    # the recording's gpt-4.1 at 2 / 0.5 cached / 8: 18 x 2 + 64 x 0.5 + 41 x 8 = 396
    assert cost_micros(Price(2.0, 8.0, cached_prompt=0.5), usage) == 396


def test_anthropic_answer_input_tokens_exclude_the_cache_and_fastroute_adds_it() -> None:
    body = orjson.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                         "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
                         "usage": {"input_tokens": 1000, "cache_read_input_tokens": 6000,
                                   "cache_creation_input_tokens": 3000, "output_tokens": 500}})
    usage = anthropic_format.parse_response(body).usage
    assert (usage.input_tokens, usage.cached_input_tokens, usage.cache_creation_tokens) == (10_000, 6000, 3000)
    assert cost_micros(SONNET, usage) == 3_000 + 1_800 + 11_250 + 7_500


def test_anthropic_stream_usage(decoders: ModuleType) -> None:
    # a recording: input_tokens 412 (uncached) and 1024 read from the cache
    events = decoders.AnthropicStreamDecoder("test").feed(
        (FIXTURES / "anthropic_thinking_tools_stream.sse").read_bytes())
    usage = [e.usage for e in events if e.kind == "usage"][-1]
    assert (usage.input_tokens, usage.cached_input_tokens, usage.output_tokens) == (1436, 1024, 87)
    assert cost_micros(SONNET, usage) == round(412 * 3 + 1024 * 0.3 + 87 * 15)  # 1236 + 307.2 + 1305


def test_anthropic_stream_cache_writes_in_the_final_usage(decoders: ModuleType) -> None:
    def sse(kind: str, **data: object) -> bytes:
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"

    stream = (sse("message_start", message={"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                                            "content": [], "usage": {"input_tokens": 10, "output_tokens": 1}})
              + sse("content_block_start", index=0, content_block={"type": "text", "text": ""})
              + sse("content_block_delta", index=0, delta={"type": "text_delta", "text": "hi"})
              + sse("content_block_stop", index=0)
              + sse("message_delta", delta={"stop_reason": "end_turn"},
                    usage={"input_tokens": 10, "cache_creation_input_tokens": 2000, "cache_read_input_tokens": 0,
                           "output_tokens": 20})
              + sse("message_stop"))
    usage = [e.usage for e in decoders.AnthropicStreamDecoder("test").feed(stream) if e.kind == "usage"][-1]
    assert (usage.input_tokens, usage.cache_creation_tokens, usage.output_tokens) == (2010, 2000, 20)
    assert cost_micros(SONNET, usage) == 30 + 7_500 + 300


def test_ollama_usage_has_no_cache(decoders: ModuleType) -> None:
    usage = decoders.ollama_usage({"prompt_eval_count": 57, "eval_count": 33})
    assert (usage.input_tokens, usage.cached_input_tokens, usage.cache_creation_tokens) == (57, 0, 0)
    assert cost_micros(Price(1.0, 2.0), usage) == 57 + 66


# ── the built-in table ──────────────────────────────────────────────────────

def test_the_built_in_table_loads_and_prices_well_known_models() -> None:
    table = load_table()
    assert table.source.startswith("litellm ") and re.fullmatch(r"\d{4}-\d{2}-\d{2}", table.date)
    assert 100 < len(table.models) and (ROOT / "fastroute" / "data" / "prices.json").stat().st_size < 1_000_000
    gpt = table.models["gpt-4o"]
    assert 0.5 <= gpt.prompt <= 20 and gpt.prompt < gpt.completion
    assert gpt.cached_prompt is not None and gpt.cached_prompt < gpt.prompt
    claude = table.models["claude-sonnet-4-5-20250929"]
    assert 0.5 <= claude.prompt <= 30 and claude.prompt < claude.completion
    assert claude.cached_prompt is not None and claude.cache_write is not None
    assert claude.cached_prompt < claude.prompt < claude.cache_write
    p = Pricing(table=table)
    assert p.source == table.source
    assert p.price_for("anthropic", "claude-sonnet-4-5-20250929") == claude
    assert p.price_for("openrouter", "anthropic/claude-sonnet-4-5") == table.models["claude-sonnet-4-5"]
    assert p.price_for("gemini", "gemini-2.5-pro") is not None
    assert p.price_for("mistral", "mistral-large-latest") is not None
    assert p.price_for("deepseek", "deepseek-chat") is not None


def test_a_malformed_table_is_refused_naming_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"source": "s", "date": "2026-01-01", "models": {"m": {"prompt": 1}}}))
    with pytest.raises(ValueError, match=r'models\."m"'):
        load_table(path)
    path.write_text(json.dumps({"source": "s", "date": "2026-01-01",
                                "models": {"m": {"prompt": -1, "completion": 1}}}))
    with pytest.raises(ValueError, match=r'models\."m": prompt'):
        load_table(path)
    path.write_text("[]")
    with pytest.raises(ValueError, match="'models'"):
        load_table(path)


# ── scripts/gen_prices.py ───────────────────────────────────────────────────

LITELLM_FIXTURE = {
    "sample_spec": {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0, "litellm_provider": "one of ...",
                    "mode": "one of: chat, embedding, ..."},
    "gpt-4o": {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05, "cache_read_input_token_cost": 1.25e-06,
               "input_cost_per_token_batches": 1.25e-06, "litellm_provider": "openai", "mode": "chat"},
    "claude-sonnet-4-5-20250929": {"input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
                                   "cache_read_input_token_cost": 3e-07, "cache_creation_input_token_cost": 3.75e-06,
                                   "input_cost_per_token_above_200k_tokens": 6e-06,
                                   "litellm_provider": "anthropic", "mode": "chat"},
    "deepseek/deepseek-chat": {"input_cost_per_token": 2.8e-07, "output_cost_per_token": 4.2e-07,
                               "cache_read_input_token_cost": 2.8e-08, "cache_creation_input_token_cost": 0.0,
                               "litellm_provider": "deepseek", "mode": "chat"},
    "Deepseek/DeepSeek-Chat": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06,
                               "litellm_provider": "deepseek", "mode": "chat"},  # a case-twin: dropped
    "text-embedding-3-small": {"input_cost_per_token": 2e-08, "output_cost_per_token": 0.0,
                               "litellm_provider": "openai", "mode": "embedding"},
    "gpt-image-1": {"input_cost_per_token": 5e-06, "litellm_provider": "openai", "mode": "chat"},  # no output price
    "bedrock/anthropic.claude-v2": {"input_cost_per_token": 8e-06, "output_cost_per_token": 2.4e-05,
                                    "litellm_provider": "bedrock", "mode": "chat"},  # a provider not kept
    "gpt-weird": {"input_cost_per_token": "1e-6", "output_cost_per_token": 1e-06,
                  "litellm_provider": "openai", "mode": "chat"},  # not a number
}

CONVERTED = {
    "claude-sonnet-4-5-20250929": {"prompt": 3.0, "completion": 15.0, "cached_prompt": 0.3, "cache_write": 3.75},
    "deepseek/deepseek-chat": {"prompt": 0.28, "completion": 0.42, "cached_prompt": 0.028, "cache_write": 0.0},
    "gpt-4o": {"prompt": 2.5, "completion": 10.0, "cached_prompt": 1.25, "cache_write": None},
}


def test_generator_converts_per_token_to_per_million() -> None:
    table = gen_prices.convert(LITELLM_FIXTURE, "litellm 9.9.9 (x.json)", "2026-01-02")
    assert table == {"source": "litellm 9.9.9 (x.json)", "date": "2026-01-02", "models": CONVERTED}
    assert list(table["models"]) == sorted(table["models"], key=str.lower)
    # in decimal: no 2.4999999999999996
    assert gen_prices.per_million(2.5e-06) == 2.5 and gen_prices.per_million(3.3e-07) == 0.33
    assert gen_prices.per_million(True) is None and gen_prices.per_million(-1e-6) is None
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        gen_prices.convert(LITELLM_FIXTURE, "s", "02/01/2026")


@pytest.mark.parametrize("member", ["litellm/model_prices_and_context_window_backup.json",
                                    "model_prices_and_context_window.json"])
def test_generator_reads_a_wheel_and_writes_a_table_fastroute_loads(tmp_path: Path, member: str) -> None:
    wheel = tmp_path / "litellm-9.9.9-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("litellm/__init__.py", "")
        z.writestr(member, json.dumps(LITELLM_FIXTURE))
    out = tmp_path / "data" / "prices.json"
    assert gen_prices.main(["--from", str(wheel), "--out", str(out), "--date", "2026-01-02"]) == 0
    doc = json.loads(out.read_text())
    assert doc == {"source": f"litellm 9.9.9 ({member})", "date": "2026-01-02", "models": CONVERTED}
    table = load_table(out)
    assert isinstance(table, PriceTable) and table.date == "2026-01-02"
    assert table.models["gpt-4o"] == Price(2.5, 10.0, 1.25, None)


def test_generator_takes_a_json_file(tmp_path: Path) -> None:
    source = tmp_path / "model_prices_and_context_window.json"
    source.write_text(json.dumps(LITELLM_FIXTURE))
    out = tmp_path / "prices.json"
    assert gen_prices.main(["--from", str(source), "--out", str(out), "--date", "2026-01-02"]) == 0
    assert json.loads(out.read_text())["models"] == CONVERTED


def test_generator_refuses_a_wheel_without_the_list(tmp_path: Path) -> None:
    wheel = tmp_path / "litellm-9.9.9-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("litellm/__init__.py", "")
    with pytest.raises(SystemExit, match="has none of"):
        gen_prices.read_wheel(wheel)
