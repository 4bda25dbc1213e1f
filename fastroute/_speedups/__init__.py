"""Hot paths, compiled with Cython, each beside a pure-Python twin of identical behaviour.

- SSE splitting: ``_sse_py.py`` and the hand-written ``_sse_c.pyx`` (a tight byte loop);
- keyword classification: ``_keywords_py.py`` and ``_keywords_c.pyx`` (Aho-Corasick);
- the routing table's scan: ``_rules_py.py`` and ``_rules_c.pyx``;
- upstream stream decoding (OpenAI, Anthropic, Ollama bytes -> canonical events):
  ``_decode_py.py``, compiled from the same source as ``_decode_c`` (Cython
  pure-Python mode, ``_decode_c.py`` links to it), so the two cannot drift;
- request shapes (the declarative check of a client's body): ``_shape_py.py``, compiled the
  same way as ``_shape_c``.

``FASTROUTE_NO_EXTENSIONS=1`` (also true, yes, on; read once, by ``_switch``, which
setup.py loads by path to read it the same way) forces the Python versions; a value that
is neither yes nor no is a config error.  Both implementations stay importable by name (``...Py``,
``...C``, the latter None when not built) so tests and benchmarks run each;
:func:`implementation` says which one is live.
"""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from types import ModuleType
from typing import TYPE_CHECKING

from fastroute.errors import ConfigError

try:  # first, so the switch is read (once) here, before any module that obeys it
    from fastroute._speedups._switch import NO_EXTENSIONS
except ValueError as exc:  # neither yes nor no: said like any other config error
    raise ConfigError("environment", "FASTROUTE_NO_EXTENSIONS", str(exc)) from None
from fastroute._speedups import _decode_py, _shape_py
from fastroute._speedups._keywords_py import KeywordMatcher as KeywordMatcherPy
from fastroute._speedups._rules_py import RuleScanner as RuleScannerPy
from fastroute._speedups._sse_py import SSEDecoder as SSEDecoderPy
from fastroute._speedups._sse_py import SSEEvent

SSEDecoderC: type | None = None
RuleScannerC: type | None = None
KeywordMatcherC: type | None = None
decode_c: ModuleType | None = None
shape_c: ModuleType | None = None
if not (TYPE_CHECKING or NO_EXTENSIONS):
    try:
        from fastroute._speedups._sse_c import SSEDecoder as SSEDecoderC
        from fastroute._speedups._rules_c import RuleScanner as RuleScannerC
        from fastroute._speedups import _decode_c as decode_c
    except ImportError:  # not compiled: no compiler at install time
        SSEDecoderC = RuleScannerC = None
        decode_c = None
    if decode_c is not None and not decode_c.__file__.endswith(tuple(EXTENSION_SUFFIXES)):
        decode_c = None  # the link to the Python source, imported because nothing was compiled
    try:
        from fastroute._speedups import _shape_c as shape_c
    except ImportError:
        shape_c = None
    if shape_c is not None and not shape_c.__file__.endswith(tuple(EXTENSION_SUFFIXES)):
        shape_c = None

decode_py = _decode_py
shape_py = _shape_py
#: the live request-shape module: its classes build every dialect's schema (formats/shape.py)
shape = shape_c if shape_c is not None else shape_py
_decode = decode_c if decode_c is not None else decode_py

SSEDecoder = SSEDecoderC if SSEDecoderC is not None else SSEDecoderPy
RuleScanner = RuleScannerC if RuleScannerC is not None else RuleScannerPy
if not (TYPE_CHECKING or NO_EXTENSIONS):
    try:
        from fastroute._speedups._keywords_c import KeywordMatcher as KeywordMatcherC
    except ImportError:
        KeywordMatcherC = None
KeywordMatcher = KeywordMatcherC if KeywordMatcherC is not None else KeywordMatcherPy
OpenAIStreamDecoder = _decode.OpenAIStreamDecoder
AnthropicStreamDecoder = _decode.AnthropicStreamDecoder
OllamaStreamDecoder = _decode.OllamaStreamDecoder
# the helpers the decoders share with formats/ (one place for each piece of logic)
OPENAI_STOP, ANTHROPIC_STOP, OLLAMA_STOP = _decode_py.OPENAI_STOP, _decode_py.ANTHROPIC_STOP, _decode_py.OLLAMA_STOP
openai_usage, anthropic_usage, ollama_usage = _decode.openai_usage, _decode.anthropic_usage, _decode.ollama_usage
args_text = _decode.args_text
#: ids for what upstreams send without one (Ollama's answers and tool calls)
new_id = _decode.new_id


def implementation() -> str:
    """``"compiled"`` when the Cython speedups are live, else ``"python"``."""
    compiled = (SSEDecoderC, decode_c, RuleScannerC, KeywordMatcherC, shape_c)
    return "compiled" if all(part is not None for part in compiled) else "python"


__all__ = [
    "NO_EXTENSIONS", "SSEDecoder", "SSEDecoderC", "SSEDecoderPy", "SSEEvent", "decode_c", "decode_py",
    "shape", "shape_c", "shape_py",
    "RuleScanner", "RuleScannerC", "RuleScannerPy", "KeywordMatcher", "KeywordMatcherC", "KeywordMatcherPy",
    "OpenAIStreamDecoder", "AnthropicStreamDecoder", "OllamaStreamDecoder", "implementation",
]
