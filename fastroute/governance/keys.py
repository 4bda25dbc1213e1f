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

import asyncio
import fnmatch
import hashlib
import hmac
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastroute.config import Config, KeyConfig

if TYPE_CHECKING:
    from fastroute.governance.key_store import KeyStore

log = logging.getLogger("fastroute.governance")

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
    #: the admin API's entry when the key was created there (None: the config's)
    stored: dict[str, Any] | None = None
    _pattern: re.Pattern[str] | None = None
    _allowed: dict[str, bool] = field(default_factory=dict)

    def require(self, model: str) -> None:
        """Forbidden (403) when this key may not ask for ``model``."""
        if not self.allows(model):
            from fastroute.errors import Forbidden

            raise Forbidden(f"key {self.name!r} may not use model '{model}'", param="model", code="model_not_allowed")

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
    """The keys a server accepts: the config's, and the admin API's from a
    :class:`~fastroute.governance.key_store.KeyStore`.  ``required`` is False only when there is
    no key and no store: then anyone may call.  With a store (the admin API on) a key is always
    required, even before the first is created and after the last is revoked: revoking a key
    never opens the server to everyone."""

    def __init__(self, keys: list[Key], store: KeyStore | None = None) -> None:
        self._static = list(keys)
        #: where the admin API's keys are (None: only the config's)
        self.store = store
        #: called with the ring after each reload (the Responses state follows ``required``)
        self.on_change: list[Callable[[KeyRing], None]] = []
        self._reloading: asyncio.Future[None] | None = None
        #: the store's keys as last loaded
        self._stored: list[Key] = []
        self._set(self._static)

    def _set(self, keys: list[Key]) -> None:
        by_digest: dict[bytes, Key] = {}
        for key in keys:
            by_digest[key.sha256] = key
        self._by_digest = by_digest
        self._by_name = {k.name: k for k in keys}
        self.required = bool(keys) or self.store is not None
        #: some key has a rate limit or a budget
        self.limited = any(k.limits is not None for k in keys)

    @classmethod
    def from_config(cls, config: Config, environ: Mapping[str, str] = os.environ,
                    store: KeyStore | None = None) -> KeyRing:
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
            keys.append(key_of(k, sha))
        return cls(keys, store)

    def find(self, presented: str | None) -> Key | None:
        """The key whose secret was presented, among those loaded, or None.  The lookup is by
        digest; the digest found is compared again in constant time, so a timing cannot tell
        how near a guess came."""
        if presented is None:
            return None
        sha = hashlib.sha256(presented_bytes(presented)).digest()
        key = self._by_digest.get(sha)
        if key is None or not hmac.compare_digest(key.sha256, sha):
            return None
        return key

    async def lookup(self, presented: str | None) -> Key | None:
        """:meth:`find`, after reading the store again when it changed (or, for a key not
        loaded, when the store says it may have changed)."""
        store = self.store
        if store is None:
            return self.find(presented)
        if store.changed():
            await self.reload()
        key = self.find(presented)
        if key is None and presented is not None and await store.refresh():
            await self.reload()
            key = self.find(presented)
        return key

    async def ready(self) -> None:
        """The store's changes loaded (``required`` up to date)."""
        if self.store is not None and self.store.changed():
            await self.reload()

    async def reload(self) -> None:
        """Read the store's keys again (one read at a time; concurrent callers share it).  When the
        store cannot be read, the keys loaded last stay (the store says so in the log)."""
        if self._reloading is not None:
            return await asyncio.shield(self._reloading)
        done = self._reloading = asyncio.get_running_loop().create_future()
        try:
            await self._reload()
        finally:
            self._reloading = None
            done.set_result(None)

    async def _reload(self) -> None:
        from fastroute.config import key_from_dict
        from fastroute.errors import ConfigError
        from fastroute.storage.base import StorageUnavailable

        assert self.store is not None
        try:
            entries = await self.store.load()
        except StorageUnavailable:
            return
        stored = []
        for entry in entries:
            try:
                k = key_from_dict(stored_fields(entry), source=f"key {entry.get('name')!r} in {self.store.where}")
            except ConfigError as exc:
                log.error("keys: %s; that key is skipped", exc)
                continue
            assert k.key_sha256 is not None
            stored.append(key_of(k, bytes.fromhex(k.key_sha256), stored=entry))
        self._stored = stored
        self._merge()

    def use_config(self, config: Config, environ: Mapping[str, str] = os.environ) -> None:
        """The config's keys from a reloaded config; the store's stay as they were loaded."""
        self._static = KeyRing.from_config(config, environ)._static
        self._merge()

    def _merge(self) -> None:
        """The config's keys, then the store's under names the config does not use."""
        names = {k.name for k in self._static}
        self._set([*self._static, *(k for k in self._stored if k.name not in names)])
        for follow in self.on_change:
            follow(self)

    def get(self, name: str) -> Key | None:
        return self._by_name.get(name)

    def all(self) -> list[Key]:
        return sorted(self._by_name.values(), key=lambda k: k.name)

    def names(self) -> list[str]:
        return sorted(self._by_name)


def key_of(k: KeyConfig, sha: bytes, stored: dict[str, Any] | None = None) -> Key:
    return Key(k.name, sha, k.models, k, dict(k.metadata), limits_of(k), stored=stored)


#: what a stored entry has besides a ``[[keys]]`` table's fields
STORED_ONLY = ("created_ms", "updated_ms")


def stored_fields(entry: dict[str, Any]) -> dict[str, Any]:
    """A stored entry as ``[[keys]]`` would hold it."""
    return {k: v for k, v in entry.items() if k not in STORED_ONLY}


@dataclass(slots=True)
class Caller:
    """Who sent a request: the configured key it presented (None when no key is required) and
    the agent's session it belongs to, when the client says (a header, or the body's
    ``metadata.user_id``)."""

    key: Key | None = None
    session: str | None = None
