"""Declarative request shapes, checked in one walk (see :mod:`fastroute.formats.shape`).

Compiled from this same source as ``_shape_c`` (Cython pure-Python mode; ``_shape_c.pxd``
gives the classes C-level slots and ``check`` a C-level call), so the twins cannot drift.
Every spec is a :class:`Spec` with ``check(value)``, which raises :class:`ShapeError` at the
first value of the wrong shape; containers add their key to the error on the way out.
"""

from __future__ import annotations

import gc
from typing import Any

try:  # Cython's shadow module says, in the compiled build, that it is compiled
    import cython

    COMPILED = bool(cython.compiled)
except ImportError:  # no Cython here: the Python twin
    COMPILED = False

_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "an array",
          dict: "an object", type(None): "null"}


def describe(value: Any) -> str:
    """What a JSON value is, in words: ``a string``, ``an array`` …"""
    return _NAMES.get(type(value), type(value).__name__)


class ShapeError(ValueError):
    """A value of the wrong shape.  ``keys`` is filled in on the way out, innermost first."""

    def __init__(self, kind: str, expected: str = "", got: Any = None, choices: tuple = ()) -> None:
        super().__init__(kind)
        #: "type" (wrong type), "missing" (a required field), "empty", "choice" (not one of), "tag"
        self.kind = kind
        self.expected = expected
        self.got = got
        self.choices = choices
        self.keys: list = []

    def path(self, style: str = "brackets") -> str:
        """``messages[1].content[0]`` (``brackets``) or ``messages.1.content.0`` (``dots``, Anthropic's)."""
        out = ""
        for key in reversed(self.keys):
            if isinstance(key, int):
                out += f"[{key}]" if style == "brackets" else f".{key}"
            else:
                out += f".{key}" if out else key
        return out.lstrip(".")

    def describe(self) -> str:
        """The problem without its path: ``expected an object, got an array``."""
        if self.kind == "missing":
            return f"is required ({self.expected})"
        if self.kind == "empty":
            return f"expected {self.expected}, got an empty one"
        if self.kind == "choice":
            return f"expected one of {', '.join(repr(c) for c in self.choices)}, got {_short(self.got)}"
        if self.kind == "tag":
            return f"expected an object with a string '{self.expected}', got {describe(self.got)}"
        return f"expected {self.expected}, got {describe(self.got)}"


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, (str, int, float, bool)) else describe(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _at(err: ShapeError, key: Any) -> ShapeError:
    err.keys.append(key)
    return err


class Spec:
    """A shape.  ``types``: the JSON types it can be (for :class:`Either`); ``expects``: in words."""

    def __init__(self, types: frozenset, expects: str) -> None:
        self.types = types
        self.expects = expects

    def check(self, value: Any) -> None:
        raise NotImplementedError


class Types(Spec):
    """A leaf: a value of one of these exact JSON types (``True`` is no integer)."""

    def __init__(self, types: frozenset, expects: str) -> None:
        Spec.__init__(self, types, expects)

    def check(self, value: Any) -> None:
        if type(value) not in self.types:
            raise ShapeError("type", self.expects, value)


class Obj(Spec):
    """An object: each modelled field, when present and not null, has its shape; ``required``
    fields must be there (and not null).  Fields it does not model pass."""

    def __init__(self, fields: dict, required: tuple = ()) -> None:
        Spec.__init__(self, frozenset({dict}), "an object")
        self.fields = dict(fields)
        self.required = tuple(required)

    def check(self, value: Any) -> None:
        if type(value) is not dict:
            raise ShapeError("type", "an object", value)
        obj = value  # a dict from here (the compiled build iterates it as one)
        for key in self.required:
            if obj.get(key) is None:
                raise _at(ShapeError("missing", self.fields[key].expects), key)
        fields = self.fields
        key = None
        try:  # one handler for the object: the key at fault is the last one looked at
            for key, item in obj.items():
                if item is not None:
                    spec = fields.get(key)
                    if spec is not None:
                        spec.check(item)
        except ShapeError as err:
            raise _at(err, key)


class Arr(Spec):
    """An array whose every item has one shape."""

    def __init__(self, item: Spec, min_items: int = 0) -> None:
        Spec.__init__(self, frozenset({list}), "a non-empty array" if min_items else "an array")
        self.item = item
        self.min_items = min_items

    def check(self, value: Any) -> None:
        if type(value) is not list:
            raise ShapeError("type", self.expects, value)
        if len(value) < self.min_items:
            raise ShapeError("empty", self.expects, value)
        item = self.item
        i = 0
        try:
            for v in value:
                item.check(v)
                i += 1
        except ShapeError as err:
            raise _at(err, i)


class Either(Spec):
    """One of several shapes, told apart by the JSON type (a string or an array of parts)."""

    def __init__(self, *specs: Spec) -> None:
        by_type: dict = {}
        for spec in specs:
            for t in spec.types:
                by_type.setdefault(t, spec)
        Spec.__init__(self, frozenset(by_type), " or ".join(s.expects for s in specs))
        self.specs = tuple(specs)
        self.by_type = by_type

    def check(self, value: Any) -> None:
        spec = self.by_type.get(type(value))
        if spec is None:
            raise ShapeError("type", self.expects, value)
        spec.check(value)


class Text(Spec):
    """A string, non-empty when asked."""

    def __init__(self, non_empty: bool = True) -> None:
        Spec.__init__(self, frozenset({str}), "a non-empty string" if non_empty else "a string")
        self.non_empty = non_empty

    def check(self, value: Any) -> None:
        if type(value) is not str:
            raise ShapeError("type", self.expects, value)
        if self.non_empty and not value:
            raise ShapeError("empty", self.expects, value)


class OneOf(Spec):
    """A string from a fixed set (a role)."""

    def __init__(self, *choices: str) -> None:
        Spec.__init__(self, frozenset({str}), "one of " + ", ".join(repr(c) for c in choices))
        self.choices = frozenset(choices)
        self.order = tuple(choices)

    def check(self, value: Any) -> None:
        if type(value) is not str or value not in self.choices:
            raise ShapeError("choice", self.expects, value, self.order)


class Tagged(Spec):
    """An object told apart by a string field (``type``): each known tag has its shape, an
    unknown tag passes, a missing tag means ``default``."""

    def __init__(self, tag: str, cases: dict, default: Any = None) -> None:
        Spec.__init__(self, frozenset({dict}), "an object")
        self.tag = tag
        self.cases = dict(cases)
        self.default = default

    def add(self, kind: str, spec: Spec) -> None:
        """A case that refers to this spec itself (a tool result holds blocks)."""
        self.cases[kind] = spec

    def check(self, value: Any) -> None:
        if type(value) is not dict:
            raise ShapeError("type", "an object", value)
        kind = value.get(self.tag, self.default)
        if type(kind) is not str:
            raise ShapeError("tag", self.tag, kind)
        spec = self.cases.get(kind)
        if spec is not None:
            spec.check(value)


# ── nesting ─────────────────────────────────────────────────────────────────

_CONTAINERS = frozenset((dict, list))


def nests_deeper(body: Any, limit: int) -> bool:
    """True when ``body`` holds a container ``limit`` levels below itself (``body`` is level 1)."""
    if type(body) is not dict and type(body) is not list:
        return False
    if COMPILED:  # a C walk, depth first, stopping at the first container deep enough
        return _walk(body, limit)
    level = [body]  # Python: level by level, each level's children in one C call (gc.get_referents)
    for _ in range(limit):
        level = [r for r in gc.get_referents(*level) if type(r) in _CONTAINERS]
        if not level:
            return False
    return True


def _walk(node: Any, budget: int) -> bool:
    if budget == 0:
        return True
    if type(node) is dict:
        obj = node
        for item in obj.values():
            if (type(item) is dict or type(item) is list) and _walk(item, budget - 1):
                return True
        return False
    items = node
    for item in items:
        if (type(item) is dict or type(item) is list) and _walk(item, budget - 1):
            return True
    return False
