"""Keyword classification: which tags have a keyword in a text, the pure-Python twin of ``_keywords_c.pyx``.

Keywords and text are lowercased (``str.lower``); a keyword matches as a plain
substring ("def " only with its space); empty keywords are ignored.  ``match``
returns the tags with a hit in the order they were given, each once, and stops
as soon as every tag has one.

Two strategies, picked once from the number of keywords, with identical results
(tests/test_keywords.py checks both against a brute-force reference):

- few keywords: one ``in`` per keyword (CPython's substring search is fast, and
  a tag stops at its first hit);
- many: one regular expression shaped like the keywords' trie, searched from
  each position where a keyword starts.  At such a position the greedy trie
  gives the longest keyword there; every other keyword starting there is a
  prefix of it, so each keyword carries the tags of all its keyword prefixes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# at about this many keywords one trie search beats one ``in`` per keyword (measured on 1 KB to 200 KB)
TRIE_MIN_KEYWORDS = 48


def _trie_pattern(words: Sequence[str]) -> str:
    trie: dict[str, dict] = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}  # the end of a keyword

    def sub(node: dict[str, dict]) -> str:
        alts = [re.escape(ch) + sub(child) for ch, child in node.items() if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        if "" in node:  # a keyword ends here: longer ones are optional, tried first (greedy)
            return ("(?:" + body + ")?") if len(alts) > 1 or len(body) > 1 else body + "?"
        return body

    return sub(trie)


class KeywordMatcher:
    """``KeywordMatcher({tag: [keywords]}).match(text) -> [tags with a hit]``."""

    __slots__ = ("_names", "_words", "_full", "_search", "_masks")

    def __init__(self, tags: Mapping[str, Sequence[str]]) -> None:
        self._names: list[str] = []  # the tags that can match (at least one non-empty keyword), in order
        self._words: list[tuple[str, ...]] = []
        own: dict[str, int] = {}  # keyword -> bitmask of its tags
        for tag, keywords in tags.items():
            words = tuple(dict.fromkeys(k.lower() for k in keywords if k))
            if not words:
                continue
            bit = 1 << len(self._names)
            self._names.append(tag)
            self._words.append(words)
            for w in words:
                own[w] = own.get(w, 0) | bit
        self._full = (1 << len(self._names)) - 1
        self._search = None
        self._masks: dict[str, int] = {}
        if len(own) >= TRIE_MIN_KEYWORDS:
            try:
                self._search = re.compile(_trie_pattern(list(own))).search
            except (RecursionError, re.error, OverflowError):  # absurdly nested keywords: stay with ``in``
                return
            for w in own:  # the tags of every keyword that is a prefix of w
                mask = 0
                for end in range(1, len(w) + 1):
                    mask |= own.get(w[:end], 0)
                self._masks[w] = mask

    def match(self, text: str) -> list[str]:
        if not self._full:
            return []
        lowered = text.lower()
        search = self._search
        if search is None:
            return [tag for tag, words in zip(self._names, self._words) if any(w in lowered for w in words)]
        masks, full = self._masks, self._full
        found = 0
        m = search(lowered)
        while m is not None:
            found |= masks[m.group()]
            if found == full:
                break
            m = search(lowered, m.start() + 1)
        if found == full:
            return list(self._names)
        return [tag for i, tag in enumerate(self._names) if found >> i & 1]
