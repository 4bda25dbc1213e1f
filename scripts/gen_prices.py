#!/usr/bin/env python3
"""Write ``fastroute/data/prices.json``, fastroute's built-in price table, from LiteLLM's price list.

LiteLLM keeps a public list of model prices, ``model_prices_and_context_window.json``, and ships
a copy inside its wheel on PyPI (``litellm/model_prices_and_context_window_backup.json``).  This
script downloads that wheel with pip (``pip download litellm --no-deps``: nothing is installed and
nothing from it is run; the wheel is only opened as a zip), keeps the chat models of the major
providers, converts LiteLLM's USD per token to USD per million tokens, and records the LiteLLM
version and today's date::

    python scripts/gen_prices.py                        # the newest litellm on PyPI
    python scripts/gen_prices.py --version 1.110.2      # a given one
    python scripts/gen_prices.py --from prices.json     # a price list (or a litellm wheel) at hand

The table's shape (what :func:`fastroute.pricing.load_table` reads)::

    {"source": "litellm 1.110.2 (...)", "date": "YYYY-MM-DD",
     "models": {"gpt-4o": {"prompt": 2.5, "completion": 10.0, "cached_prompt": 1.25, "cache_write": null}}}

LiteLLM's keys are kept as they are (``gpt-4o``, ``claude-sonnet-4-5-20250929``,
``groq/llama-3.3-70b-versatile``); fastroute's lookup adds or strips the provider prefix.
Tiered prices (``..._above_200k_tokens``), batch, flex and priority prices are not kept: the
table has the standard price of each model.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fastroute" / "data" / "prices.json"

#: where the list lives inside a litellm wheel, first found first used (recent wheels have only the backup)
WHEEL_MEMBERS = ("litellm/model_prices_and_context_window_backup.json", "model_prices_and_context_window.json",
                 "litellm/model_prices_and_context_window.json")

#: LiteLLM's ``litellm_provider`` values whose chat models the table keeps: the model makers'
#: own APIs and the large OpenAI-compatible hosts (resellers and clouds with their own naming,
#: Bedrock, Azure, ..., are left out to keep the table small)
PROVIDERS = frozenset({
    "openai", "anthropic", "gemini", "vertex_ai-language-models", "mistral", "codestral", "deepseek", "xai",
    "groq", "cerebras", "together_ai", "fireworks_ai", "perplexity", "moonshot", "zai", "dashscope",
    "cohere_chat", "minimax",
})

#: LiteLLM's per-token fields -> the table's per-million ones
FIELDS = {"input_cost_per_token": "prompt", "output_cost_per_token": "completion",
          "cache_read_input_token_cost": "cached_prompt", "cache_creation_input_token_cost": "cache_write"}

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def per_million(value: Any) -> float | None:
    """USD per token -> USD per million tokens, converted in decimal (``2.5e-06`` -> ``2.5``, not
    ``2.4999999999999996``); None for anything that is not a number ≥ 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        return None
    return float(Decimal(repr(value)).scaleb(6).normalize())


def convert(raw: dict[str, Any], source: str, date: str, providers: frozenset[str] = PROVIDERS) -> dict[str, Any]:
    """LiteLLM's price list -> fastroute's table: chat models of ``providers`` with both an input and
    an output price, sorted by name case-insensitively.  Of names that differ only by case the
    lower-case one is kept (fastroute looks names up case-insensitively)."""
    if not _DATE.fullmatch(date):
        raise ValueError(f"date must be YYYY-MM-DD, got {date!r}")
    models: dict[str, dict[str, float | None]] = {}
    seen: set[str] = set()
    for name in sorted(raw, key=lambda n: (n.lower(), n != n.lower(), n)):
        entry = raw[name]
        if not isinstance(entry, dict) or entry.get("mode") != "chat" or entry.get("litellm_provider") not in providers:
            continue
        price = {ours: per_million(entry.get(theirs)) for theirs, ours in FIELDS.items()}
        if price["prompt"] is None or price["completion"] is None or name.lower() in seen:
            continue
        seen.add(name.lower())
        models[name] = price
    return {"source": source, "date": date, "models": models}


def read_wheel(path: Path) -> tuple[dict[str, Any], str]:
    """The price list inside a litellm wheel, and the name of the member it was read from."""
    with zipfile.ZipFile(path) as wheel:
        names = set(wheel.namelist())
        for member in WHEEL_MEMBERS:
            if member in names:
                return json.loads(wheel.read(member)), member
    raise SystemExit(f"error: {path.name} has none of {', '.join(WHEEL_MEMBERS)}")


def wheel_version(path: Path) -> str:
    """``litellm-1.110.2-cp310-abi3-....whl`` -> ``1.110.2``."""
    return path.name.split("-")[1]


def download(version: str | None, into: Path) -> Path:
    """``pip download litellm[==version] --no-deps`` into ``into``: the wheel's path."""
    spec = f"litellm=={version}" if version else "litellm"
    subprocess.run([sys.executable, "-m", "pip", "download", spec, "--no-deps", "--only-binary=:all:",
                    "-d", str(into), "-q"], check=True)
    wheels = sorted(into.glob("litellm-*.whl"))
    if not wheels:
        raise SystemExit(f"error: pip download {spec} brought no wheel")
    return wheels[0]


def render(table: dict[str, Any]) -> str:
    """JSON with one model a line: small, and a new list's diff reads model by model."""
    lines = [f"  {json.dumps(name)}: {json.dumps(price)}" for name, price in table["models"].items()]
    return (f'{{"source": {json.dumps(table["source"])}, "date": {json.dumps(table["date"])}, "models": {{\n'
            + ",\n".join(lines) + "\n}}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", type=Path,
                        help="a price list (LiteLLM's JSON) or a litellm wheel, instead of downloading one")
    parser.add_argument("--version", help="the litellm version to download (default: the newest)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write the table (default: {OUT})")
    parser.add_argument("--date", default=datetime.date.today().isoformat(), help="the table's date (default: today)")
    args = parser.parse_args(argv)

    if args.source is not None and args.source.suffix == ".whl":
        raw, member = read_wheel(args.source)
        source = f"litellm {wheel_version(args.source)} ({member})"
    elif args.source is not None:
        raw, source = json.loads(args.source.read_text(encoding="utf-8")), f"LiteLLM price list ({args.source.name})"
    else:
        with tempfile.TemporaryDirectory(prefix="fastroute-prices-") as tmp:
            wheel = download(args.version, Path(tmp))
            raw, member = read_wheel(wheel)
            source = f"litellm {wheel_version(wheel)} ({member})"
    table = convert(raw, source, args.date)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = render(table)
    args.out.write_text(text, encoding="utf-8")
    print(f"{args.out}: {len(table['models'])} models, {len(text.encode()) // 1024} KB, from {source}, {args.date}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
