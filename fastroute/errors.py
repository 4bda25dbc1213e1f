"""fastroute's errors: one tree, one root.

Every error that can reach a client knows its HTTP status and its error type;
``formats/`` renders it in the client's dialect.

    FastrouteError
    ├── ConfigError                 startup: the file, the key path, the problem
    ├── StorageError                the state store cannot be opened (fastroute.storage.base)
    │   └── StorageUnavailable      503 storage_unavailable: its backend is down now (also a RequestError)
    └── RequestError                anything answered to a client
        ├── BadRequest              400 invalid_request_error
        │   └── NoRoute             400 no provider configured for model '…'
        ├── Unauthorized            401 authentication_error
        ├── Forbidden               403 permission_error: the key may not use that model
        ├── NotFound                404 not_found_error
        ├── Conflict                409 conflict_error: the admin API's key name is taken, or the config's
        ├── PayloadTooLarge         413 request_too_large
        ├── ClientClosed            499 the client left before its body arrived
        ├── RateLimited             429 rate_limit_error
        ├── ProviderStatusError     the upstream's own 4xx, status kept (retryable: a 429)
        └── UpstreamError           502 upstream_error (retryable: the next provider may do better)
            ├── UpstreamUnreachable 502 could not connect
            ├── UpstreamProtocolError 502 broken or cut response
            └── UpstreamTimeout     504 upstream_timeout

Failover decides by type, never by a message.  ``retryable``: the next provider may do better,
and the failure counts against this one's circuit breaker (every ``UpstreamError``, timeouts
included, and a provider's 429).  ``provider_answered``: the provider answered in its own words,
so it is up (its breaker hears a success).  Neither: the attempt gives no verdict on the provider
(refused before it was sent), and a half-open breaker's trial is released.
"""

from __future__ import annotations

from typing import Any, ClassVar


class FastrouteError(Exception):
    """Root of every error fastroute raises on purpose."""


class ConfigError(FastrouteError):
    """A configuration that cannot be used; the message names file, key path and problem."""

    def __init__(self, source: str, path: str, problem: str) -> None:
        self.source = source
        self.path = path
        self.problem = problem
        where = f"{source}: {path}: " if path else f"{source}: "
        super().__init__(where + problem)


def describe(value: Any) -> str:
    """A config value as error messages show it: its kind, and the value itself when it is short."""
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}
    kind = names.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text}" if len(text) <= 40 else kind


class RequestError(FastrouteError):
    """An error answered to a client, with an honest HTTP status."""

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "internal_error"
    #: the provider failed in a way another provider (or a later try) may not: fail over
    retryable: ClassVar[bool] = False
    #: the provider answered, in its own words: it is up, whatever it said
    provider_answered: ClassVar[bool] = False

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    @property
    def http_status(self) -> int:
        return self.status


class BadRequest(RequestError):
    status = 400
    error_type = "invalid_request_error"


class NoRoute(BadRequest):
    def __init__(self, model: str) -> None:
        super().__init__(f"no provider configured for model '{model}'", param="model", code="model_not_found")


class Unauthorized(RequestError):
    status = 401
    error_type = "authentication_error"


class Forbidden(RequestError):
    """A known client asked for what its key may not use."""

    status = 403
    error_type = "permission_error"


class NotFound(RequestError):
    status = 404
    error_type = "not_found_error"


class Conflict(RequestError):
    """What the admin API was asked to do clashes with what is there (a name taken, a key of the config)."""

    status = 409
    error_type = "conflict_error"


class ClientClosed(RequestError):
    """The client went away before its request was read (nginx's 499); nobody reads the answer."""

    status = 499
    error_type = "client_closed"


class PayloadTooLarge(RequestError):
    status = 413
    error_type = "request_too_large"


class RateLimited(RequestError):
    status = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after_s: int | None = None, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message, param=param, code=code)
        #: whole seconds until the limit admits again (the answer's Retry-After); None: not by waiting
        self.retry_after_s = retry_after_s


class ProviderStatusError(RequestError):
    """The provider answered with its own client error (4xx): kept as it is.

    ``body`` holds the provider's raw error body, ``upstream_type`` the error
    type it gave, if any.
    """

    error_type = "upstream_client_error"
    provider_answered = True

    def __init__(self, provider: str, status: int, message: str, body: bytes = b"",
                 upstream_type: str | None = None, body_dialect: str | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.upstream_status = status
        self.body = body
        self.upstream_type = upstream_type
        #: the dialect ``body`` is written in: passed to clients of that dialect untouched
        self.body_dialect = body_dialect

    @property
    def http_status(self) -> int:
        return self.upstream_status

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.upstream_status == 429  # rate limited: another provider may have room


class UpstreamError(RequestError):
    status = 502
    error_type = "upstream_error"
    retryable = True

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message)
        self.provider = provider


class UpstreamUnreachable(UpstreamError):
    pass


class UpstreamProtocolError(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    """The upstream did not connect (``phase="connect"``) or answer in time (``"read"``)."""

    status = 504
    error_type = "upstream_timeout"

    def __init__(self, message: str, *, phase: str = "read", provider: str | None = None) -> None:
        super().__init__(message, provider=provider)
        self.phase = phase
