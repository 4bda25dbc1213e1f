"""The exact cache's key: a hash of the canonical request as the provider receives it, and of the route.

What is hashed is the canonical request (:class:`~fastroute.canonical.ChatRequest`) after the
``pre_request`` plugins, so the same question asked in two dialects has one key wherever the
canonical model carries all of it.  Left out, because they never change the answer: the model
the client named (the route's sent model stands for it), ``stream`` (a stream and a non-stream of
one request share an entry), the client dialect it came in (``source``) and what its answer only
echoes (``echo``), ``prompt_cache_key``, and the dialect's ``HINTS`` among its ``extra`` fields
(``user``, ``metadata``, ``stream_options``, ``store``, ...: each dialect lists those that cannot
change an answer).  Everything else a client sent is in, ``extra`` included, and so are the client
headers that travel upstream (``anthropic-beta``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from fastroute.canonical import ChatRequest

#: canonical fields that do not change the answer (``extra`` is hashed apart, without the hints)
IGNORED = frozenset({"model", "stream", "source", "echo", "prompt_cache_key", "extra"})
FIELDS = tuple(f.name for f in dataclasses.fields(ChatRequest) if f.name not in IGNORED)
_SORTED = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def request_digest(request: ChatRequest, hints: frozenset[str] = frozenset(),
                   headers: Mapping[str, str] | None = None) -> bytes:
    """16 bytes that differ when anything that can change the answer differs.  TypeError for a request
    holding what is not JSON (then it is not cached)."""
    extra = request.extra
    doc: list[Any] = [getattr(request, name) for name in FIELDS]
    doc.append({k: v for k, v in extra.items() if k not in hints} if extra else None)
    doc.append(dict(headers) if headers else None)
    return hashlib.blake2b(orjson.dumps(doc, option=_SORTED), digest_size=16).digest()


def entry_key(digest: bytes, provider: str, model: str, owner: str | None = None) -> str:
    """The key of the entry for ``digest`` sent to ``model`` at ``provider``; ``owner`` (a hash of the
    client's key) when the provider is called with the client's own key (``forward_client_key``):
    then an answer is the client's account's, and no other key may be served it."""
    h = hashlib.blake2b(digest, digest_size=16)
    h.update(b"\0".join((provider.encode(), model.encode(), (owner or "").encode())))
    return h.hexdigest()


def owner_of(client_key: str | None) -> str:
    """A client's key as the cache tells it apart: a hash, never the key."""
    return hashlib.blake2b((client_key or "").encode(), digest_size=16, person=b"fastroute-cache").hexdigest()
