"""The admin API's keys: ``POST /v1/admin/keys``, ``GET /v1/admin/keys``, ``GET /PATCH /DELETE
/v1/admin/keys/{name}``.

A created key's secret (``fr-`` and 43 URL-safe characters, 256 random bits) is in the answer
to the POST (and to a PATCH with ``"rotate": true``) and nowhere else: the store keeps its
SHA-256.  A client may bring its own secret's hash instead (``"key_sha256"``).  The body's
fields are a ``[[keys]]`` table's (``models``, ``rate_limit``, ``budget``, ``metadata``) and are
validated by the same code, errors naming the field.  A PATCH replaces the fields it names
(``null`` removes a rate limit or a budget).  The config's keys are listed with ``"source":
"config"`` and cannot be changed here (409).  Every change is read again by this worker before
the answer, and by the others on their next request (:mod:`fastroute.governance.key_store`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

from fastroute.config import key_from_dict
from fastroute.errors import BadRequest, ConfigError, Conflict, NotFound
from fastroute.governance.key_store import KeyExists, KeyMissing, KeyStore, now_ms
from fastroute.governance.keys import SERVER_KEY_NAME, Key, KeyRing, stored_fields

#: a key's name: what records, logs and metrics carry; a path segment of this API
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
#: what a POST may hold; a PATCH the same but the name and the hash, plus ``rotate``
CREATE_FIELDS = ("name", "models", "rate_limit", "budget", "metadata", "key_sha256")
PATCH_FIELDS = ("models", "rate_limit", "budget", "metadata", "rotate")
SECRET_PREFIX = "fr-"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def view(key: Key) -> dict[str, Any]:
    """A key as the API shows it: never its secret, nor its hash."""
    k = key.config
    stored = key.stored or {}
    rl = k.rate_limit if k is not None else None
    budget = k.budget if k is not None else None
    return {
        "object": "key", "name": key.name, "source": "admin" if key.stored is not None else "config",
        "models": list(key.models),
        "rate_limit": {"requests_per_minute": rl.requests_per_minute, "tokens_per_minute": rl.tokens_per_minute}
        if rl is not None else None,
        "budget": {"usd": budget.usd, "period": budget.period} if budget is not None else None,
        "metadata": dict(key.metadata),
        "created_ms": stored.get("created_ms"), "updated_ms": stored.get("updated_ms"),
    }


class AdminKeys:
    def __init__(self, ring: KeyRing, store: KeyStore | None) -> None:
        self.ring = ring
        self.store = store

    def _store(self) -> KeyStore:
        if self.store is None:
            raise NotFound("keys cannot be created here: the admin API's key store is off")
        return self.store

    async def create(self, body: Any) -> tuple[int, dict[str, Any]]:
        store = self._store()
        fields = _fields(body, CREATE_FIELDS)
        name = fields.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise BadRequest("'name' must be 1-64 letters, digits or . _ @ -, starting with a letter or digit",
                             param="name")
        await self.ring.ready()
        if name == SERVER_KEY_NAME or (self.ring.get(name) is not None and self.ring.get(name).stored is None):
            raise Conflict(f"key {name!r} is defined in the config ({'[server] api_key_env' if name == SERVER_KEY_NAME else '[[keys]]'}); "
                           "choose another name", param="name")
        secret = None
        if "key_sha256" not in fields:
            secret = new_secret()
            fields["key_sha256"] = hashlib.sha256(secret.encode()).hexdigest()
        fields.setdefault("models", ["*"])
        fields = {k: v for k, v in fields.items() if v is not None}
        _validate(fields)
        when = now_ms()
        entry = {**fields, "key_sha256": str(fields["key_sha256"]).lower(), "created_ms": when, "updated_ms": when}
        try:
            await store.put(entry, create=True)
        except KeyExists:
            raise Conflict(f"a key named {name!r} exists; PATCH /v1/admin/keys/{name} changes it", param="name") from None
        return 201, await self._answer(name, secret)

    async def list(self) -> dict[str, Any]:
        await self.ring.ready()
        return {"object": "list", "data": [view(k) for k in self.ring.all()]}

    async def get(self, name: str) -> dict[str, Any]:
        await self.ring.ready()
        return view(self._known(name))

    async def update(self, name: str, body: Any) -> dict[str, Any]:
        store = self._store()
        fields = _fields(body, PATCH_FIELDS)
        await self.ring.ready()
        key = self._changeable(name)
        rotate = fields.pop("rotate", False)
        if not isinstance(rotate, bool):
            raise BadRequest("'rotate' must be true or false", param="rotate")
        entry = dict(key.stored or {})
        secret = None
        if rotate:
            secret = new_secret()
            entry["key_sha256"] = hashlib.sha256(secret.encode()).hexdigest()
        for field, value in fields.items():
            if value is None:
                if field == "models":
                    raise BadRequest("'models' cannot be null; [\"*\"] allows every model", param="models")
                entry.pop(field, None)
            else:
                entry[field] = value
        _validate(stored_fields(entry))
        entry["updated_ms"] = now_ms()
        try:
            await store.put(entry, create=False)
        except KeyMissing:
            raise NotFound(f"no key named {name!r}", param="name") from None
        return await self._answer(name, secret)

    async def delete(self, name: str) -> dict[str, Any]:
        store = self._store()
        await self.ring.ready()
        self._changeable(name)
        try:
            await store.delete(name)
        except KeyMissing:
            raise NotFound(f"no key named {name!r}", param="name") from None
        await self.ring.reload()
        return {"object": "key", "name": name, "deleted": True}

    async def _answer(self, name: str, secret: str | None) -> dict[str, Any]:
        await self.ring.reload()  # this worker: at once
        key = self.ring.get(name)
        if key is None:  # written, and not readable back: the store is away again
            raise NotFound(f"key {name!r} was written but cannot be read back now")
        shown = view(key)
        if secret is not None:
            shown["key"] = secret  # the only time it is shown
        return shown

    def _known(self, name: str) -> Key:
        key = self.ring.get(name)
        if key is None:
            raise NotFound(f"no key named {name!r}", param="name")
        return key

    def _changeable(self, name: str) -> Key:
        key = self._known(name)
        if key.stored is None:
            raise Conflict(f"key {name!r} is defined in the config; change it there", param="name")
        return key


def _fields(body: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    for field in body:
        if field not in allowed:
            raise BadRequest(f"unknown field {field!r}; allowed: {', '.join(allowed)}", param=field)
    return dict(body)


def _validate(fields: dict[str, Any]) -> None:
    """The fields as ``[[keys]]`` validates them; the error names the field."""
    try:
        key_from_dict(fields, source="key")
    except ConfigError as exc:
        path = exc.path.lstrip(".")
        raise BadRequest(f"{path}: {exc.problem}" if path else exc.problem, param=path or None) from None
