"""What fastroute copies into response headers (model names, tags, provider names): checked or encoded.

A model name is the client's; it reaches ``x-router-model`` and friends, so it is checked where a
request is read: at most ``MAX_MODEL_CHARS`` characters and no control characters, else a 400 in
the client's dialect.  Any header value fastroute writes goes through :func:`header_value`:
printable ASCII as it is, anything else (a model name in another script, say) percent-encoded as
UTF-8, so a header can never break the response.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from fastroute.errors import BadRequest

MAX_MODEL_CHARS = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_model_name(model: str, param: str = "model") -> str:
    if len(model) > MAX_MODEL_CHARS:
        raise BadRequest(f"'{param}': a model name is at most {MAX_MODEL_CHARS} characters, got {len(model)}",
                         param=param)
    if _CONTROL.search(model):
        raise BadRequest(f"'{param}': a model name cannot hold control characters", param=param)
    return model


def header_value(text: str) -> bytes:
    if text.isascii() and text.isprintable():  # printable ASCII: what [\x20-\x7e]* matches, measured faster
        return text.encode("ascii")
    return quote(text, safe=" !#$&'()*+,-./:;<=>?@[]^_`{|}~").encode("ascii")
