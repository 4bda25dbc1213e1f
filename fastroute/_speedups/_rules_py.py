"""The routing table's scan: find the next rule that can match a request, the pure-Python twin.

Rules are compiled at startup to (kind, key) pairs: ``PREFIX`` (key: the model
prefix), ``TAG`` (key: the tag) or ``OTHER`` (every other rule type, judged in
Python by the router).  ``scan(model, tags, start)`` returns the index of the
first rule at or after ``start`` that is an ``OTHER`` rule or whose key
matches, or -1.  With hundreds of prefix rules this loop is the per-request
cost of routing; ``_rules_c.pyx`` runs the same loop in C.
"""

from __future__ import annotations

from collections.abc import Collection

PREFIX = 0
TAG = 1
OTHER = 2


class RuleScanner:
    __slots__ = ("_kinds", "_keys", "_n")

    def __init__(self, kinds: list[int], keys: list[str]) -> None:
        if len(kinds) != len(keys):
            raise ValueError("kinds and keys differ in length")
        self._kinds = list(kinds)
        self._keys = list(keys)
        self._n = len(kinds)

    def scan(self, model: str, tags: Collection[str], start: int) -> int:
        kinds, keys = self._kinds, self._keys
        for i in range(max(start, 0), self._n):
            kind = kinds[i]
            if kind == PREFIX:
                if model.startswith(keys[i]):
                    return i
            elif kind == TAG:
                if keys[i] in tags:
                    return i
            else:
                return i
        return -1
