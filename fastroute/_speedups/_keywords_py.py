"""Keyword classification: which tags have a keyword in a text, the pure-Python twin.

Keywords and text are lowercased; a keyword matches as a plain substring.
"""

from __future__ import annotations


class KeywordMatcher:
    __slots__ = ("_tags",)

    def __init__(self, tags: dict[str, list[str]]) -> None:
        self._tags = [(tag, tuple(k.lower() for k in words if k)) for tag, words in tags.items()]

    def match(self, text: str) -> list[str]:
        lowered = text.lower()
        return [tag for tag, words in self._tags if any(w in lowered for w in words)]
