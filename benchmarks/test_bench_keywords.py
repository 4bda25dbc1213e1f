"""Keyword classification per request: the compiled Aho-Corasick matcher against its Python twin.

Prompts of 1 KB to 200 KB (English prose with code, generated deterministically),
10 to 1,000 keywords; the keywords are absent, so the whole text is scanned,
except in ``-early-hit`` where one occurs near the start and ends the scan.

    pytest benchmarks/test_bench_keywords.py --benchmark-group-by=group --benchmark-columns=median
"""

from __future__ import annotations

import random

import pytest

from fastroute import _speedups
from fastroute._speedups import _keywords_py

PROSE = (
    "the a of and to in is that for it as with was on be by this are from at or an have not which you "
    "can please explain why how what could would should write code test bug fix issue example output "
    "request response model user system message config file data list error value server client "
    "timeout retry token stream function return import class async await string number latency "
    "cache database query index table column migration deploy release version build pipeline review"
).split()
IDENTS = ["request", "response", "payload", "client", "user_id", "items", "config", "result", "session",
          "handler", "retries", "timeout", "buffer", "row", "cursor", "logger", "path", "headers"]
CODE = [
    "def {a}({b}, {c}):\n    return {b}.{c}\n",
    "    if {a} is None:\n        raise ValueError(\"missing {a}\")\n",
    "for {a} in {b}:\n    {c}.append({a})\n",
    "const {a} = await fetch({b}, {{ method: \"POST\" }});\n",
    "    {a} = self.{b}.get(\"{c}\", {{}})\n",
    "SELECT {a}, {b} FROM {c} WHERE id = ?;\n",
]
SYLLABLES = ("ka lo mi zu re ta vex qua bri den sol mar tin gor plu fen ab el ish oth ny cra hob wip jun "
             "yel dro sna pex ulv").split()


def prompt(size: int, seed: int, unicode: bool = False) -> str:
    rng = random.Random(seed)
    parts: list[str] = []
    n = 0
    while n < size:
        if rng.random() < 0.25:
            a, b, c = rng.sample(IDENTS, 3)
            part = "```python\n" + "".join(rng.choice(CODE).format(a=a, b=b, c=c) for _ in range(4)) + "```\n"
        else:
            words = [rng.choice(PROSE) for _ in range(rng.randint(8, 20))]
            if unicode:  # “curly quotes”, accents, the odd emoji: a text of 2 or 4 bytes a code point
                words[rng.randrange(len(words))] = rng.choice(["“café”", "naïve", "déjà", "über", "🚀", "日本"])
            part = " ".join(words).capitalize() + ". "
        parts.append(part)
        n += len(part)
    return "".join(parts)[:size]


def absent_keywords(n: int, texts: list[str], seed: int) -> list[str]:
    """Made-up words and two-word phrases, none in any of ``texts`` (whole keywords; their prefixes may be)."""
    rng = random.Random(seed)
    lowered = [t.lower() for t in texts]
    out: dict[str, None] = {}
    while len(out) < n:
        w = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))
        if rng.random() < 0.3:
            w += " " + "".join(rng.choice(SYLLABLES) for _ in range(2))
        if not any(w in t for t in lowered):
            out[w] = None
    return list(out)


def tags_of(keywords: list[str], n_tags: int) -> dict[str, list[str]]:
    tags: dict[str, list[str]] = {f"tag{i}": [] for i in range(n_tags)}
    for i, w in enumerate(keywords):
        tags[f"tag{i % n_tags}"].append(w)
    return tags


KB = 1000
TEXT_1K, TEXT_20K, TEXT_200K = prompt(1 * KB, 1), prompt(20 * KB, 2), prompt(200 * KB, 3)
TEXT_200K_UNICODE = prompt(200 * KB, 4, unicode=True)
KEYWORDS = absent_keywords(1000, [TEXT_1K, TEXT_20K, TEXT_200K, TEXT_200K_UNICODE], 5)
EARLY_TEXT = TEXT_200K[:300] + " I get a Stack Trace here. " + TEXT_200K[300:]
EARLY_TAGS = {"code": KEYWORDS[:500] + ["stack trace"] + KEYWORDS[500:]}

# group -> (tags, text, expected)
CASES = {
    "keywords-10-1KB": (tags_of(KEYWORDS[:10], 3), TEXT_1K, []),
    "keywords-100-20KB": (tags_of(KEYWORDS[:100], 8), TEXT_20K, []),
    "keywords-1000-200KB": (tags_of(KEYWORDS, 20), TEXT_200K, []),
    "keywords-100-200KB-unicode": (tags_of(KEYWORDS[:100], 8), TEXT_200K_UNICODE, []),
    "keywords-1000-200KB-early-hit": (EARLY_TAGS, EARLY_TEXT, ["code"]),
}


@pytest.fixture(params=["python", "compiled"])
def impl(request: pytest.FixtureRequest) -> type:
    if request.param == "compiled":
        if _speedups.NO_EXTENSIONS:
            pytest.skip("FASTROUTE_NO_EXTENSIONS set")
        return pytest.importorskip("fastroute._speedups._keywords_c", reason="not compiled").KeywordMatcher
    return _keywords_py.KeywordMatcher


@pytest.mark.parametrize("case", list(CASES))
def test_keyword_match(benchmark, impl: type, case: str) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = case
    tags, text, expected = CASES[case]
    matcher = impl(tags)  # built once, at startup
    assert benchmark(matcher.match, text) == expected
