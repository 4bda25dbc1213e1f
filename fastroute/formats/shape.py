"""Declarative request shapes: what a dialect models, checked in one walk, errors naming the JSON path.

Each dialect writes its request once, as data::

    PART = Tagged("type", {"text": Obj({"text": STR}, required=("text",)),
                           "image_url": Obj({"image_url": Obj({"url": STR}, required=("url",))})})
    REQUEST = Obj({"model": Text(), "messages": Arr(MESSAGE, min_items=1), "stream": BOOL, ...},
                  required=("model", "messages"))

and ``REQUEST.check(body)`` raises :class:`ShapeError` at the first value of the wrong type,
with its path (``messages[1].content[0].image_url``), what was expected and what came.  Only
what is modelled is checked: fields a dialect does not know, and part types it does not know,
pass untouched (a same-dialect provider judges them).  ``null`` for an optional field is the
field left out, as every SDK reads it.  The parsers rely on the check: after it, a value they
read has the type written here.

Leaves take exact JSON types (``orjson`` gives exact ``str``/``int``/``float``/``bool``/
``list``/``dict``; ``true`` is no integer).  The walk is a hot path (every request's body goes
through it, the same-dialect fast path included): the classes are the compiled ones from
``fastroute._speedups`` when built, their Python twin otherwise.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from fastroute._speedups import shape as _live
from fastroute.errors import BadRequest

Spec, Types, Obj, Arr, Either, Text, OneOf, Tagged = (
    _live.Spec, _live.Types, _live.Obj, _live.Arr, _live.Either, _live.Text, _live.OneOf, _live.Tagged)
ShapeError = _live.ShapeError
describe = _live.describe

STR = Types(frozenset({str}), "a string")
INT = Types(frozenset({int}), "an integer")
NUM = Types(frozenset({int, float}), "a number")
BOOL = Types(frozenset({bool}), "a boolean")
#: an object, whatever it holds (a JSON schema, metadata)
OBJECT = Types(frozenset({dict}), "an object")


def bad_request(err: ShapeError) -> BadRequest:
    """The 400 of a wrong-shaped body, worded as OpenAI words it: the path, then the problem."""
    path = err.path()
    return BadRequest(f"{path or 'the request body'}: {err.describe()}", param=path or None,
                      code="missing_required_parameter" if err.kind == "missing" else "invalid_type")


def built_with(spec: Any, impl: ModuleType, memo: dict[int, Any] | None = None) -> Any:
    """The same shape built from another implementation's classes (``_speedups.shape_py`` or
    ``shape_c``), for tests and benchmarks that run a dialect's schema on both."""
    memo = {} if memo is None else memo
    if id(spec) in memo:
        return memo[id(spec)]
    kind = type(spec).__name__
    if kind == "Types":
        out = impl.Types(spec.types, spec.expects)
    elif kind == "Text":
        out = impl.Text(spec.non_empty)
    elif kind == "OneOf":
        out = impl.OneOf(*spec.order)
    elif kind == "Arr":
        out = impl.Arr(built_with(spec.item, impl, memo), spec.min_items)
    elif kind == "Either":
        out = impl.Either(*(built_with(s, impl, memo) for s in spec.specs))
    elif kind == "Obj":
        out = impl.Obj({k: built_with(v, impl, memo) for k, v in spec.fields.items()}, spec.required)
    elif kind == "Tagged":  # made first, filled after: a case may hold the spec itself
        out = memo[id(spec)] = impl.Tagged(spec.tag, {}, spec.default)
        for name, case in spec.cases.items():
            out.add(name, built_with(case, impl, memo))
    else:
        raise TypeError(f"not a shape: {spec!r}")
    memo[id(spec)] = out
    return out
