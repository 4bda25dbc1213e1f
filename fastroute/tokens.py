"""Counting a request's input tokens here, for providers with no counting endpoint of their own.

    counter = TokenCounter()                    # nothing loaded yet
    counter.prepare("gpt-4o")                   # blocking, once: loads the tokenizer (call it off the loop)
    counter.count(request, "gpt-4o")            # TokenCount(input_tokens=..., method="tokenizer=o200k_base")

The tokenizer is ``bpe_openai``: OpenAI's cl100k_base and o200k_base tables ship inside its
wheel, so it works with no network.  It is imported on first use, never at import: loading it
costs about a second and ~140 MB, and a worker that never counts never pays.  When it cannot
be imported the count is an estimate of four characters a token.

``method`` says how a count was made (the ``x-router-token-count`` header):

    tokenizer=o200k_base             the routed model's own tokenizer (OpenAI families)
    estimate; tokenizer=o200k_base   a model whose tokenizer fastroute lacks (Claude, Llama, Qwen, ...)
    estimate; chars/4                no tokenizer library

What is counted is what the model would see: the system prompt and every message's text
(``system``-role messages too), tool calls' names and arguments, tool results, and tool
definitions (name, description, the schema as compact JSON); plus OpenAI's chat framing,
3 tokens a message and 3 to start the reply, 8 a tool definition (12 more once there are
tools) and 3 a tool call.  Estimated, not read:

- an image is 1,600 tokens (what Claude charges for an image at its largest size before it
  scales it down, ~1.15 megapixels; OpenAI's high detail tops out lower): a ceiling, so a
  context budget is not overrun;
- a PDF is 2,000 tokens a page (Anthropic: 1,500-3,000 a page), its pages counted from the
  page objects in the file (at least one); a document by URL, one page; a text document is
  counted as text;
- a block the canonical model does not carry (a search result, ...) is counted as its JSON;
  the record of a hosted tool's run is not (it only goes where the hosted tools go);
- thinking from earlier turns is not counted: OpenAI-format providers never receive it, and
  Anthropic does not count it either.

A text over ``SLICE_CHARS`` is counted in slices cut before a space (the tokenizer refuses
very long inputs); each cut can move the count by a token at most.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from fastroute.canonical import ChatRequest, DocumentPart, ImagePart, RawPart, TextPart

log = logging.getLogger("fastroute.tokens")

MESSAGE_OVERHEAD = 3
REPLY_PRIMING = 3
NAME_OVERHEAD = 1
TOOL_CALL_OVERHEAD = 3
TOOL_OVERHEAD = 8
TOOLS_OVERHEAD = 12
IMAGE_TOKENS = 1_600
PAGE_TOKENS = 2_000
CHARS_PER_TOKEN = 4
#: at most 4 tokens a character, so a slice stays under bpe_openai's 200,000-token limit
SLICE_CHARS = 40_000
#: the tokenizer used to estimate models whose own fastroute does not have
ESTIMATE_ENCODING = "o200k_base"

_FAMILIES = (
    (re.compile(r"(gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-oss|codex|o[134](-|$))"), "o200k_base"),
    (re.compile(r"(gpt-4|gpt-3\.5|gpt-35|text-embedding-(3|ada-002))"), "cl100k_base"),
)
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")


def encoding_for_model(model: str) -> tuple[str, bool]:
    """(the encoding to count ``model`` with, whether it is that model's own).

    A provider's prefix (``openai/gpt-4o``) and a fine-tune's (``ft:gpt-4o-mini:...``) are looked through.
    """
    name = model.rpartition("/")[2].lower().removeprefix("ft:")
    for pattern, encoding in _FAMILIES:
        if pattern.match(name):
            return encoding, True
    return ESTIMATE_ENCODING, False


@dataclass(frozen=True, slots=True)
class TokenCount:
    input_tokens: int
    #: how it was counted: the value of the x-router-token-count header
    method: str


def estimate_text(text: str) -> int:
    """Four characters a token, rounded up."""
    return -(-len(text) // CHARS_PER_TOKEN)


class TokenCounter:
    """Counts requests with ``library`` (``bpe_openai``'s API), imported on first use.

    ``library=None`` or a module that cannot be imported: the four-characters estimate.
    Safe to share between threads; loading happens once per encoding.
    """

    def __init__(self, library: str | None = "bpe_openai") -> None:
        self._library = library
        self._encodings: dict[str, Any] = {}
        self._unavailable = library is None
        self._lock = threading.Lock()

    def ready(self, model: str) -> bool:
        """True when counting for ``model`` will not have to load anything first."""
        return self._unavailable or encoding_for_model(model)[0] in self._encodings

    def prepare(self, model: str) -> None:
        """Load what counting for ``model`` needs.  Blocks (about a second the first time)."""
        self._encoding(encoding_for_model(model)[0])

    def count_text(self, text: str, encoding: str = ESTIMATE_ENCODING) -> int:
        return self._measure(encoding)(text)

    def count(self, request: ChatRequest, model: str) -> TokenCount:
        """The input tokens of ``request`` as ``model`` would see them (loads the tokenizer if needed)."""
        encoding, exact = encoding_for_model(model)
        measure = self._measure(encoding)
        if measure is estimate_text:
            method = "estimate; chars/4"
        else:
            method = f"tokenizer={encoding}" if exact else f"estimate; tokenizer={encoding}"
        total = REPLY_PRIMING
        if request.system:
            total += MESSAGE_OVERHEAD + measure(request.system)
        for m in request.messages:
            total += MESSAGE_OVERHEAD
            if m.name:
                total += NAME_OVERHEAD + measure(m.name)
            for part in m.content:
                total += _part_tokens(part, measure)
            for call in m.tool_calls:
                total += TOOL_CALL_OVERHEAD + measure(call.name) + measure(call.arguments)
        if request.tools:
            total += TOOLS_OVERHEAD
        for tool in request.tools:
            schema = orjson.dumps(tool.parameters).decode() if tool.parameters else ""
            total += TOOL_OVERHEAD + measure(tool.name) + measure(tool.description or "") + measure(schema)
        return TokenCount(total, method)

    # the tokenizer --------------------------------------------------------

    def _measure(self, encoding: str) -> Callable[[str], int]:
        """text -> tokens: the encoding's when it can be had, else :func:`estimate_text`."""
        enc = self._encoding(encoding)
        return estimate_text if enc is None else (lambda text: _bpe_count(enc, text))

    def _encoding(self, name: str) -> Any:
        enc = self._encodings.get(name)
        if enc is not None or self._unavailable:
            return enc
        with self._lock:
            if name not in self._encodings and not self._unavailable:
                assert self._library is not None
                try:
                    module = importlib.import_module(self._library)
                except ImportError as exc:
                    log.warning("token counts are estimates (four characters a token): %s cannot be "
                                "imported: %s", self._library, exc)
                    self._unavailable = True
                    return None
                self._encodings[name] = module.get_encoding(name)
        return self._encodings.get(name)


def _bpe_count(enc: Any, text: str) -> int:
    n, start = 0, 0
    while len(text) - start > SLICE_CHARS:
        cut = text.rfind(" ", start + SLICE_CHARS // 2, start + SLICE_CHARS)
        if cut < 0:
            cut = start + SLICE_CHARS
        n += len(enc.encode_ordinary(text[start:cut]))
        start = cut
    return n + len(enc.encode_ordinary(text[start:] if start else text))


def _part_tokens(part: Any, measure: Callable[[str], int]) -> int:
    if isinstance(part, TextPart):
        return measure(part.text)
    if isinstance(part, ImagePart):
        return IMAGE_TOKENS
    if isinstance(part, DocumentPart):
        title = measure(part.title) if part.title else 0
        if part.text is not None:
            return title + measure(part.text)
        if part.data and (part.media_type or "").startswith("text/"):
            return title + measure(_decoded(part.data).decode("utf-8", "replace"))
        if part.data:
            return title + PAGE_TOKENS * max(1, len(_PDF_PAGE.findall(_decoded(part.data))))
        return title + PAGE_TOKENS
    if isinstance(part, RawPart):  # a block the canonical model does not carry: its JSON
        return 0 if part.hosted else measure(orjson.dumps(part.block).decode())
    return 0  # thinking: not seen again


def _decoded(data: str) -> bytes:
    try:
        return base64.b64decode(data)
    except (binascii.Error, ValueError):
        return b""
