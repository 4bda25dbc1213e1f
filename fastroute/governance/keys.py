"""Virtual keys (``[[keys]]``): who may call, and which models.

A key is configured by name with its secret in an environment variable (``key_env``) or as
the hex SHA-256 of the secret (``key_sha256``); fastroute keeps only the digest.  A presented
key is hashed once and looked up by digest, then compared in constant time: nothing on the
request path depends on which byte of a wrong key differs, and no secret is held, logged or
shown — records carry the key's name.

With ``[server] api_key_env`` set and no ``[[keys]]``, that one shared key is the only key
(named ``server``, every model); with both, it is one more key.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastroute.config import Config, KeyConfig

#: the name records carry for ``[server] api_key_env``'s shared key
SERVER_KEY_NAME = "server"


def client_key(request: Any) -> str | None:
    """The key the client presented, as ``Authorization: Bearer`` or ``x-api-key``."""
    auth = request.get_first_header(b"authorization")
    if auth:
        scheme, _, value = auth.partition(b" ")
        if scheme.lower() == b"bearer" and value:
            return value.strip().decode("latin-1")
    key = request.get_first_header(b"x-api-key")
    return key.decode("latin-1") if key else None


def digest(secret: str) -> bytes:
    """The digest of a configured secret: of its UTF-8 bytes, what a client sends."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def presented_bytes(presented: str) -> bytes:
    """A presented key's bytes as they came (``client_key`` decodes the header as latin-1)."""
    return presented.encode("latin-1", "replace")


@dataclass(slots=True)
class Key:
    """One key as the request path sees it: a name, what it may call, its limits; never its secret."""

    name: str
    sha256: bytes
    models: tuple[str, ...] = ("*",)
    config: KeyConfig | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: its rate limits and budget (governance.limiter.Limits), None: none
    limits: Any = None
    _pattern: re.Pattern[str] | None = None
    _allowed: dict[str, bool] = field(default_factory=dict)

    def allows(self, model: str) -> bool:
        """May this key ask for ``model``?  Globs as fnmatch reads them (``*``, ``?``, ``[...]``), case-sensitive."""
        known = self._allowed.get(model)
        if known is None:
            if self._pattern is None:
                self._pattern = re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in self.models) or "(?!)")
            known = bool(self._pattern.match(model))
            if len(self._allowed) >= 1024:
                self._allowed.clear()
            self._allowed[model] = known
        return known


def limits_of(k: KeyConfig) -> Any:
    """The key's ``rate_limit`` and ``budget`` as the limiter counts them; None when it has neither."""
    if k.rate_limit is None and k.budget is None:
        return None
    from fastroute.governance.limiter import Limits

    rl, budget = k.rate_limit, k.budget
    return Limits(requests_per_minute=rl.requests_per_minute if rl else None,
                  tokens_per_minute=rl.tokens_per_minute if rl else None,
                  budget_usd=budget.usd if budget else None, budget_period=budget.period if budget else "month")


class KeyRing:
    """The keys a server accepts.  ``required`` is False when none is configured: then anyone may call."""

    def __init__(self, keys: list[Key]) -> None:
        self._by_digest: dict[bytes, Key] = {}
        for key in keys:
            self._by_digest[key.sha256] = key
        self.required = bool(keys)
        #: some key has a rate limit or a budget
        self.limited = any(k.limits is not None for k in keys)

    @classmethod
    def from_config(cls, config: Config, environ: Mapping[str, str] = os.environ) -> KeyRing:
        keys = []
        server = config.server.api_key_env
        if server and environ.get(server):
            keys.append(Key(SERVER_KEY_NAME, digest(environ[server])))
        for k in config.keys:
            if k.key_env:
                secret = environ.get(k.key_env)
                if not secret:  # require_env says so at startup; a key unset later admits nobody
                    continue
                sha = digest(secret)
            else:
                assert k.key_sha256 is not None  # the config requires one of the two
                sha = bytes.fromhex(k.key_sha256)
            keys.append(Key(k.name, sha, k.models, k, dict(k.metadata), limits_of(k)))
        return cls(keys)

    def find(self, presented: str | None) -> Key | None:
        """The key whose secret was presented, or None.  The lookup is by digest; the digest found
        is compared again in constant time, so a timing cannot tell how near a guess came."""
        if presented is None:
            return None
        sha = hashlib.sha256(presented_bytes(presented)).digest()
        key = self._by_digest.get(sha)
        if key is None or not hmac.compare_digest(key.sha256, sha):
            return None
        return key

    def names(self) -> list[str]:
        return sorted(k.name for k in self._by_digest.values())


@dataclass(slots=True)
class Caller:
    """Who sent a request: the configured key it presented (None when no key is required) and
    the agent's session it belongs to, when the client says (a header, or the body's
    ``metadata.user_id``)."""

    key: Key | None = None
    session: str | None = None
