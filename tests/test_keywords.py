"""The keyword matcher, on both implementations: explicit cases, then parity with a brute-force reference.

The Python twin picks ``in`` checks for few keywords and a trie search for many,
so every explicit case also runs with an extra tag of absent filler keywords
(``many``), which changes no result but switches the Python strategy.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from fastroute import _speedups
from fastroute._speedups import _keywords_py

Tags = dict[str, list[str]]
Match = Callable[[Tags, str], list[str]]

FILLER = [f"qqfiller{i}qq" for i in range(_keywords_py.TRIE_MIN_KEYWORDS + 2)]


def reference(tags: Tags, text: str) -> list[str]:
    return [tag for tag, kws in tags.items() if any(k.lower() in text.lower() for k in kws if k)]


@pytest.fixture(params=["python", "compiled"])
def impl(request: pytest.FixtureRequest) -> type:
    if request.param == "python":
        return _keywords_py.KeywordMatcher
    if _speedups.NO_EXTENSIONS:
        pytest.skip("FASTROUTE_NO_EXTENSIONS set")
    module = pytest.importorskip("fastroute._speedups._keywords_c", reason="compiled speedups not built")
    return module.KeywordMatcher


@pytest.fixture(params=["few", "many"])
def match(request: pytest.FixtureRequest, impl: type) -> Match:
    def run(tags: Tags, text: str) -> list[str]:
        if request.param == "many":
            tags = {**tags, "zz-filler": FILLER}
        return impl(tags).match(text)

    return run


def test_case_insensitive(match: Match) -> None:
    tags = {"code": ["Stack Trace", "FUNCTION"], "sql": ["select"]}
    assert match(tags, "here is a STACK TRACE from my Function") == ["code"]
    assert match(tags, "SeLeCt * from t") == ["sql"]
    assert match(tags, "stack  trace") == []


def test_overlapping_keywords(match: Match) -> None:
    tags = {"he": ["he"], "she": ["she"], "his": ["his"], "hers": ["hers"]}
    assert match(tags, "ushers") == ["he", "she", "hers"]
    assert match(tags, "this") == ["his"]
    assert match(tags, "sh") == []
    assert match(tags, "ahishers") == ["he", "she", "his", "hers"]


def test_keyword_inside_another(match: Match) -> None:
    tags = {"long": ["classification"], "short": ["class"], "middle": ["ssif"]}
    assert match(tags, "a classification task") == ["long", "short", "middle"]
    assert match(tags, "a class") == ["short"]
    assert match(tags, "classifie") == ["short", "middle"]
    assert match(tags, "lassification") == ["middle"]


def test_keywords_across_tags_and_shared_keyword(match: Match) -> None:
    tags = {"code": ["def ", "class"], "python": ["def ", "import"], "go": ["func "]}
    assert match(tags, "def f(): pass") == ["code", "python"]
    assert match(tags, "import os") == ["python"]
    assert match(tags, "func main() { class }") == ["code", "go"]
    assert match({"a": ["x", "x"], "b": ["x"]}, "x") == ["a", "b"]


def test_non_ascii(match: Match) -> None:
    tags = {"fr": ["café"], "ja": ["日本"], "emoji": ["🚀"], "de": ["STRASSE", "Größe"]}
    assert match(tags, "Un CAFÉ au lait") == ["fr"]
    assert match(tags, "日本語のテキスト") == ["ja"]
    assert match(tags, "launch 🚀 now, GRÖẞE") == ["emoji", "de"]  # capital sharp s lowers to ß
    assert match(tags, "Grösse GRÖSSE") == []  # str.lower, not casefold
    assert match(tags, "cafe 日 本 strasse") == ["de"]
    assert match(tags, "ça va, ünïcödé ohne Treffer") == []


def test_lowercasing_is_str_lower(match: Match) -> None:
    # str.lower, not a byte rule: the Kelvin sign lowers to ASCII "k", "İ" to "i" + a combining dot
    assert match({"k": ["kb"]}, "64 \u212aB") == ["k"]
    assert match({"i": ["i\u0307s"]}, "\u0130S") == ["i"]
    assert match({"i": ["is"]}, "\u0130S") == []
    assert match({"sigma": ["σ"]}, "ΣΟΦΙΑ") == ["sigma"]


def test_lone_surrogate(match: Match) -> None:
    assert match({"s": ["x\ud800"]}, "a X\ud800 b") == ["s"]
    assert match({"s": ["\ud83d\ude00"]}, "😀") == []  # two code points, not the one emoji


def test_trailing_space_keyword(match: Match) -> None:
    tags = {"py": ["def "]}
    assert match(tags, "def main") == ["py"]
    assert match(tags, "define") == []
    assert match(tags, "undef") == []
    assert match(tags, "x = undef ") == ["py"]


def test_regex_characters_are_literal(match: Match) -> None:
    tags = {"cpp": ["c++"], "dot": ["a.b"], "paren": ["f(x)"], "back": ["\\n"], "star": [".*"]}
    assert match(tags, "c++ and f(x)") == ["cpp", "paren"]
    assert match(tags, "axb c+ fx") == []
    assert match(tags, "a.b \\n .*") == ["dot", "back", "star"]


def test_empty_text(match: Match) -> None:
    assert match({"a": ["x"], "b": ["y"]}, "") == []


def test_empty_keywords_and_lists(impl: type, match: Match) -> None:
    assert match({}, "anything") == []
    assert match({"none": [], "blank": [""], "a": ["", "x"]}, "x") == ["a"]
    assert match({"blank": ["", ""]}, "") == []
    assert impl({}).match("text") == []
    assert impl({"e": []}).match("") == []


def test_order_is_the_tags_order(match: Match) -> None:
    tags = {"c": ["gamma"], "a": ["alpha"], "b": ["beta"]}
    assert match(tags, "beta alpha gamma") == ["c", "a", "b"]
    assert match(tags, "alpha beta") == ["a", "b"]
    reversed_tags = dict(reversed(tags.items()))
    assert match(reversed_tags, "gamma beta alpha") == ["b", "a", "c"]


def test_start_and_end_of_text(match: Match) -> None:
    tags = {"start": ["hello"], "end": ["bye"], "whole": ["hello bye"]}
    assert match(tags, "hello") == ["start"]
    assert match(tags, "Hello and BYE") == ["start", "end"]
    assert match(tags, "hello bye") == ["start", "end", "whole"]
    assert match(tags, "ello by") == []
    assert match({"one": ["x"]}, "x") == ["one"]


def test_200kb_text(match: Match) -> None:
    line = "The quick brown fox jumps over the lazy dog; def handler(request): return response\n"
    text = line * (200_000 // len(line) + 1)
    tags = {"code": ["stack trace", "segfault"], "sql": ["select "], "py": ["def handler"],
            "end": ["the very end"], "start": ["the quick"]}
    assert match(tags, text) == ["py", "start"]
    assert match(tags, text + "THE VERY END") == ["py", "end", "start"]
    assert match(tags, "Stack trace: " + text) == ["code", "py", "start"]
    wide = text + "café 日本 Stack Trace"  # a non-ASCII text of 200 KB, four bytes a code point
    assert match(tags, wide) == ["code", "py", "start"]
    assert match({"emoji": ["🚀"], "x": ["日本 stack"]}, wide + "🚀") == ["emoji", "x"]


def test_matcher_is_reusable_and_thread_safe(impl: type) -> None:
    tags = {"a": ["alpha"], "b": ["beta"], "c": ["gamma"], **{f"f{i}": [w] for i, w in enumerate(FILLER)}}
    m = impl(tags)
    texts = [("alpha " * 20_000, ["a"]), ("beta gamma " * 10_000, ["b", "c"]), ("nothing " * 20_000, []),
             ("x", []), ("ALPHA", ["a"])]
    for text, expected in texts * 2:
        assert m.match(text) == expected
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda te: m.match(te[0]) == te[1], texts * 20))
    assert all(results)


def _random_case(rng: random.Random, alphabet: str, n_keywords: int, text_len: int) -> tuple[Tags, str]:
    words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6))) for _ in range(n_keywords)]
    n_tags = rng.randint(1, 8)
    tags: Tags = {f"tag{i}": [] for i in range(n_tags)}
    for w in words:
        tags[f"tag{rng.randrange(n_tags)}"].append(w)
    text = "".join(rng.choice(alphabet) for _ in range(text_len))
    return tags, text


@pytest.mark.parametrize("alphabet", ["abc d", "abcABC", "aäÄé日本 x", "ab\u0130K\u212a😀\ud800 "],
                         ids=["ascii", "ascii-case", "unicode", "special"])
@pytest.mark.parametrize("n_keywords", [3, 20, 150])
def test_random_parity(impl: type, alphabet: str, n_keywords: int) -> None:
    rng = random.Random(len(alphabet) * 1000 + n_keywords)
    for _ in range(300):
        tags, text = _random_case(rng, alphabet, rng.randint(0, n_keywords), rng.randint(0, 300))
        assert impl(tags).match(text) == reference(tags, text), (tags, text)


def test_random_parity_large(impl: type) -> None:
    rng = random.Random(7)
    for _ in range(5):
        tags, text = _random_case(rng, "abcdefgh \n", 400, 50_000)
        tags["long"] = ["".join(rng.choice("abcdefgh ") for _ in range(12)) for _ in range(100)]
        assert impl(tags).match(text) == reference(tags, text)


def test_deeply_nested_keywords(impl: type) -> None:
    # "a", "aa", ... : too deep for the Python trie's regex, which then falls back to ``in``
    tags = {f"t{i}": ["a" * i] for i in range(1, 700)}
    assert impl(tags).match("b" + "A" * 350 + "c") == [f"t{i}" for i in range(1, 351)]
