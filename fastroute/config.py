"""Configuration: TOML (opensourcellmrouter's format, plus additive keys) -> frozen dataclasses.

Every problem is a :class:`~fastroute.errors.ConfigError` naming the file, the
key path (``providers[1].base_url``) and what is wrong, so a server never
starts half-configured.  Provider keys are *not* read here: only the names of
the environment variables that hold them.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from fastroute.errors import ConfigError
from fastroute.errors import describe as _describe
from fastroute.pricing import Price, parse_pricing
from fastroute.limits import JSON_DEPTH_CEILING, MAX_HEADER_BYTES, MAX_JSON_DEPTH, MAX_STREAM_LINE_BYTES

PROVIDER_FORMATS = ("openai", "anthropic", "ollama", "echo")
STORAGE_KINDS = ("sqlite", "memory", "redis")
UPSTREAM_CLIENTS = ("lean", "aiohttp", "httpx")
CAPABILITIES = ("vision", "tools", "coding", "reasoning")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8090
    dashboard: bool = False
    api_key_env: str | None = None
    #: the upstream HTTP client on the request path: "aiohttp" (fastest, measured) or "httpx"
    upstream_client: str = "lean"
    #: request bodies above this many bytes are refused with 413
    max_body_bytes: int = 32 * 1024 * 1024
    #: request headers above this many bytes are refused with 431 (see fastroute.limits)
    max_header_bytes: int = MAX_HEADER_BYTES
    #: request bodies nested deeper than this are refused with 400, naming where
    max_json_depth: int = MAX_JSON_DEPTH
    #: an upstream stream line (or SSE event) longer than this ends the stream with an error
    max_stream_line_bytes: int = MAX_STREAM_LINE_BYTES
    #: seconds in-flight requests get to finish after Ctrl-C / SIGTERM
    shutdown_grace_s: float = 30.0
    workers: int = 1
    #: print one line per request on stdout (failed requests are printed whatever this says)
    access_log: bool = False


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    enabled: bool = False
    path: str = "logs/requests.jsonl"


@dataclass(frozen=True, slots=True)
class FailoverConfig:
    """Trying the next provider when one fails before the first byte reaches the client."""

    #: attempts in all, the first included
    max_attempts: int = 3
    #: backoff before a retry: base * 2**n, jittered, capped
    backoff_ms: float = 50.0
    backoff_max_ms: float = 1000.0
    #: consecutive failures that open a provider's circuit breaker
    breaker_threshold: int = 5
    #: seconds an open breaker waits before letting one trial request through
    breaker_cooldown_s: float = 30.0


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    #: seconds between background refreshes of discovered model lists
    interval_s: float = 60.0
    #: seconds one discovery call may take
    timeout_s: float = 3.0


@dataclass(frozen=True, slots=True)
class EventsConfig:
    """The live event feed shared by several instances (machines) through Redis pub/sub."""

    #: e.g. "redis://10.0.0.5:6379/0"; none: the feed is this machine's (its workers share it)
    redis_url: str | None = None
    #: the pub/sub channel every instance of one deployment uses
    channel: str = "fastroute:events"
    #: name of an env var holding the Redis password (kept out of the URL, so out of any output)
    redis_password_env: str | None = None


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Where state that outlives a request lives (see fastroute.storage)."""

    #: "sqlite" (one file, shared by the workers of one machine), "memory" (each worker its own,
    #: lost at exit) or "redis" (shared by every instance)
    kind: str = "sqlite"
    #: the SQLite file; none: $XDG_DATA_HOME/fastroute/state.sqlite3 (~/.local/share/fastroute/...)
    path: str | None = None
    #: bytes of keys and values the memory store holds; the least recently used go first
    memory_max_bytes: int = 64 * 1024 * 1024
    #: e.g. "redis://10.0.0.5:6379/0"; required by kind = "redis"
    redis_url: str | None = None
    #: name of an env var holding the Redis password (kept out of the URL, so out of any output)
    redis_password_env: str | None = None
    #: the start of every Redis key
    key_prefix: str = "fastroute:"


@dataclass(frozen=True, slots=True)
class ResponsesConfig:
    """What fastroute keeps of OpenAI Responses for later requests (see fastroute.responses_store)."""

    #: keep responses asked with store true or absent (OpenAI's default); off: previous_response_id
    #: and item_reference get a 400 that says so
    store: bool = True
    #: how long a kept response (and its items) can be referred to
    ttl_s: float = 3 * 24 * 3600.0
    #: a response whose kept state would be larger is not kept
    max_bytes: int = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """The exact cache (see fastroute.cache): an answer served again for the same request and route."""

    enabled: bool = False
    #: "memory" (each worker its own) or "redis" ([storage]'s Redis, shared); none: follows [storage] kind
    kind: str | None = None
    #: how long an answer is served again
    ttl_s: float = 300.0
    #: answers kept at most (memory; Redis bounds itself)
    max_entries: int = 1000
    #: bytes of keys and answers kept at most (memory); an answer larger than this is never kept
    max_bytes: int = 64 * 1024 * 1024
    #: requests with a temperature above this are not cached
    max_temperature: float = 0.0
    #: requests that set no temperature (the provider's default) are cached
    cache_unset_temperature: bool = True
    #: requests that offer tools are cached too
    tools: bool = False


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """OpenTelemetry over OTLP/HTTP (opensourcellmrouter's keys): traces at ``{otlp_endpoint}/v1/traces``,
    metrics at ``{otlp_endpoint}/v1/metrics``; ``fastroute.telemetry`` (``pip install 'fastroute[otel]'``)."""

    enabled: bool = False
    otlp_endpoint: str = "http://localhost:4318"
    service_name: str = "fastroute"
    sample_ratio: float = 1.0


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    format: str
    base_url: str = ""
    api_key_env: str | None = None
    cost_per_1m_tokens: float = 0.0
    quality: float = 0.0
    latency_ms: float | None = None
    throughput_tokens_per_sec: float | None = None
    #: drop this provider at startup (with a warning) when its key is unset
    strict: bool = False
    #: send the client's own key to this provider instead of the configured one
    forward_client_key: bool = False
    #: seconds to establish the connection
    connect_timeout: float = 10.0
    #: seconds to wait for the next byte of the answer (local models can be slow)
    read_timeout: float = 600.0
    #: models this provider serves, listed by GET /v1/models
    models: tuple[str, ...] = ()
    #: what its models can do ("vision", "tools", "coding"); empty: not declared (assumed able).
    #: Discovered models bring their own.
    capabilities: tuple[str, ...] = ()
    #: look up this provider's models (Ollama /api/tags + /api/show, OpenAI-format /v1/models)
    discover: bool = False


@dataclass(frozen=True, slots=True)
class RandomCandidate:
    provider: str
    model: str


@dataclass(frozen=True, slots=True)
class PrefixRule:
    type: Literal["prefix"]
    model_prefix: str
    provider: str
    rewrite_model: str | None = None
    fallbacks: tuple[str, ...] = ()
    fallback_models: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TagRule:
    type: Literal["tag"]
    tag: str
    provider: str
    rewrite_model: str | None = None
    fallbacks: tuple[str, ...] = ()
    fallback_models: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DiscoverRule:
    type: Literal["discover"]
    provider: str
    fallbacks: tuple[str, ...] = ()
    fallback_models: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PriceRule:
    type: Literal["price"]
    providers: tuple[str, ...] = ()
    max_cost_per_1m_tokens: float | None = None
    fallbacks: tuple[str, ...] = ()
    fallback_models: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LatencyRule:
    type: Literal["latency"]
    providers: tuple[str, ...] = ()
    max_latency_ms: float | None = None
    fallbacks: tuple[str, ...] = ()
    fallback_models: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ThroughputRule:
    type: Literal["throughput"]
    providers: tuple[str, ...] = ()
    min_tokens_per_sec: float | None = None
    fallbacks: tuple[str, ...] = ()
    fallback_models: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FallbackRule:
    type: Literal["fallback"]
    providers: tuple[str, ...] = ()
    quality_bias: float = 0.5
    rewrite_model: str | None = None
    fallbacks: tuple[str, ...] = ()
    fallback_models: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RandomRule:
    type: Literal["random"]
    providers: tuple[str, ...] = ()
    rewrite_model: str | None = None
    candidates: tuple[RandomCandidate, ...] = ()
    fallbacks: tuple[str, ...] = ()
    fallback_models: tuple[str, ...] = ()


RouterRule = Union[PrefixRule, TagRule, DiscoverRule, PriceRule, LatencyRule, ThroughputRule,
                   FallbackRule, RandomRule]
RULE_TYPES: dict[str, type] = {
    "prefix": PrefixRule, "tag": TagRule, "discover": DiscoverRule, "price": PriceRule,
    "latency": LatencyRule, "throughput": ThroughputRule, "fallback": FallbackRule,
    "random": RandomRule,
}


@dataclass(frozen=True, slots=True)
class EntryConfig:
    """A plugin or classifier: ``enabled`` plus free-form settings."""

    enabled: bool = False
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """``[audit]``: one record per request (key, session, model, tokens, cost, latency, status)."""

    enabled: bool = True
    #: the SQLite file ([storage] kind = "memory": the records are kept in memory instead)
    path: str | None = None
    #: records older than this many days are removed (0: kept for ever)
    retention_days: float = 90.0
    #: request headers that name the agent's session, first found wins
    session_headers: tuple[str, ...] = ("x-claude-code-session-id", "session_id", "x-session-id",
                                        "conversation_id")


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """``[admin]``: the admin API is on when ``token_env`` names a set variable."""

    token_env: str | None = None


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


@dataclass(frozen=True, slots=True)
class BudgetConfig:
    usd: float
    period: Literal["day", "week", "month", "total"] = "month"


@dataclass(frozen=True, slots=True)
class KeyConfig:
    """One ``[[keys]]`` entry: a client key by name; its secret in ``key_env`` or as ``key_sha256``."""

    name: str
    key_env: str | None = None
    #: the hex SHA-256 of the secret (``printf %s "$KEY" | sha256sum``)
    key_sha256: str | None = None
    #: the models this key may ask for, as globs; ["*"]: all
    models: tuple[str, ...] = ("*",)
    rate_limit: RateLimitConfig | None = None
    budget: BudgetConfig | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Config:
    source: str = "<embedded default>"
    server: ServerConfig = ServerConfig()
    logging: LoggingConfig = LoggingConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    failover: FailoverConfig = FailoverConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()
    events: EventsConfig = EventsConfig()
    storage: StorageConfig = StorageConfig()
    responses: ResponsesConfig = ResponsesConfig()
    cache: CacheConfig = CacheConfig()
    providers: tuple[ProviderConfig, ...] = ()
    routers: tuple[RouterRule, ...] = ()
    keys: tuple[KeyConfig, ...] = ()
    audit: AuditConfig = AuditConfig()
    admin: AdminConfig = AdminConfig()
    #: [pricing."<model>"] (or "<provider>/<model>"): prices that override the built-in table
    pricing: dict[str, Price] = field(default_factory=dict)
    classifiers: dict[str, EntryConfig] = field(default_factory=dict)
    response_classifiers: dict[str, EntryConfig] = field(default_factory=dict)
    plugins: dict[str, EntryConfig] = field(default_factory=dict)

    def provider(self, name: str) -> ProviderConfig | None:
        for p in self.providers:
            if p.name == name:
                return p
        return None


def require_env(cfg: Config) -> None:
    """Serving needs the env vars the config names for the server: a ConfigError for one that is unset."""
    checks = (("server.api_key_env", cfg.server.api_key_env, "clients would be refused"),
              *((f"keys[{i}].key_env", k.key_env, f"key {k.name!r} would admit nobody") for i, k in enumerate(cfg.keys)),
              ("events.redis_password_env", cfg.events.redis_password_env, "Redis would refuse the events"),
              ("storage.redis_password_env", cfg.storage.redis_password_env, "Redis would refuse the storage"))
    for path, name, why in checks:
        if name and not os.environ.get(name):
            raise ConfigError(cfg.source, path, f"${name} is not set; {why}")


# ── loading ─────────────────────────────────────────────────────────────────

def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML config file."""
    return config_from_dict(read_toml(path), str(path))


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A TOML file's document; a missing, unreadable or malformed file is a ConfigError."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, "", f"cannot read file: {exc}") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"invalid TOML: {exc}") from exc


def config_from_dict(data: dict[str, Any], source: str = "<config>") -> Config:
    """Validate already-parsed config data (a TOML document's dict)."""
    v = _Validator(source)
    if not isinstance(data, dict):
        raise ConfigError(source, "", "the config must be a table")
    known = {"server", "logging", "telemetry", "failover", "discovery", "events", "storage", "responses", "cache",
             "providers", "routers", "keys", "audit", "admin", "pricing", "classifiers", "response_classifiers", "plugins"}
    v.check_unknown(data, known, "")
    cfg = Config(
        source=source,
        server=v.build(ServerConfig, data.get("server", {}), "server"),
        logging=v.build(LoggingConfig, data.get("logging", {}), "logging"),
        telemetry=v.build(TelemetryConfig, data.get("telemetry", {}), "telemetry"),
        failover=v.build(FailoverConfig, data.get("failover", {}), "failover"),
        discovery=v.build(DiscoveryConfig, data.get("discovery", {}), "discovery"),
        events=v.build(EventsConfig, data.get("events", {}), "events"),
        storage=v.build(StorageConfig, data.get("storage", {}), "storage"),
        responses=v.build(ResponsesConfig, data.get("responses", {}), "responses"),
        cache=v.build(CacheConfig, data.get("cache", {}), "cache"),
        providers=tuple(v.build(ProviderConfig, p, f"providers[{i}]")
                        for i, p in enumerate(v.array(data.get("providers", []), "providers"))),
        routers=tuple(v.rule(r, f"routers[{i}]")
                      for i, r in enumerate(v.array(data.get("routers", []), "routers"))),
        keys=tuple(v.build(KeyConfig, k, f"keys[{i}]") for i, k in enumerate(v.array(data.get("keys", []), "keys"))),
        pricing=parse_pricing(data.get("pricing", {}), "pricing", source),
        audit=v.build(AuditConfig, data.get("audit", {}), "audit"),
        admin=v.build(AdminConfig, data.get("admin", {}), "admin"),
        classifiers=v.entries(data.get("classifiers", {}), "classifiers"),
        response_classifiers=v.entries(data.get("response_classifiers", {}), "response_classifiers"),
        plugins=v.entries(data.get("plugins", {}), "plugins"),
    )
    _check_consistency(cfg, v)
    return cfg


def _check_consistency(cfg: Config, v: _Validator) -> None:
    r = cfg.responses
    if r.ttl_s <= 0:
        v.fail("responses.ttl_s", f"must be above 0, got {r.ttl_s}")
    if r.max_bytes < 1024:
        v.fail("responses.max_bytes", f"must be at least 1024, got {r.max_bytes}")
    s = cfg.server
    if s.upstream_client not in UPSTREAM_CLIENTS:
        v.fail("server.upstream_client", f"must be one of {', '.join(UPSTREAM_CLIENTS)}, got {s.upstream_client!r}")
    if not 0 < s.port < 65536:
        v.fail("server.port", f"must be between 1 and 65535, got {s.port}")
    if s.workers < 1:
        v.fail("server.workers", f"must be at least 1, got {s.workers}")
    f = cfg.failover
    if f.max_attempts < 1:
        v.fail("failover.max_attempts", f"must be at least 1, got {f.max_attempts}")
    if f.breaker_threshold < 1:
        v.fail("failover.breaker_threshold", f"must be at least 1, got {f.breaker_threshold}")
    if cfg.discovery.interval_s <= 0:
        v.fail("discovery.interval_s", f"must be positive, got {cfg.discovery.interval_s}")
    if s.max_body_bytes < 1024:
        v.fail("server.max_body_bytes", f"must be at least 1024, got {s.max_body_bytes}")
    if s.max_header_bytes < 4096:
        v.fail("server.max_header_bytes", f"must be at least 4096, got {s.max_header_bytes}")
    if not 8 <= s.max_json_depth <= JSON_DEPTH_CEILING:
        v.fail("server.max_json_depth", f"must be between 8 and {JSON_DEPTH_CEILING}, got {s.max_json_depth}")
    if s.max_stream_line_bytes < 1024:
        v.fail("server.max_stream_line_bytes", f"must be at least 1024, got {s.max_stream_line_bytes}")
    e = cfg.events
    if e.redis_url is not None:
        _check_redis_url(v, "events", e.redis_url)
    if not e.channel:
        v.fail("events.channel", "must not be empty")
    _check_storage(cfg.storage, v)
    _check_cache(cfg, v)
    t = cfg.telemetry
    if not 0.0 <= t.sample_ratio <= 1.0:
        v.fail("telemetry.sample_ratio", f"must be between 0 and 1, got {t.sample_ratio}")
    scheme, _, rest = t.otlp_endpoint.partition("://")
    if scheme not in ("http", "https") or not rest.strip("/"):
        v.fail("telemetry.otlp_endpoint", f"must be an http:// or https:// URL, got {t.otlp_endpoint!r}")
    seen: set[str] = set()
    for i, p in enumerate(cfg.providers):
        path = f"providers[{i}]"
        if not p.name:
            v.fail(f"{path}.name", "must not be empty")
        if p.name in seen:
            v.fail(f"{path}.name", f"duplicate provider name {p.name!r}")
        seen.add(p.name)
        if p.format not in PROVIDER_FORMATS:
            v.fail(f"{path}.format", f"must be one of {', '.join(PROVIDER_FORMATS)}, got {p.format!r}")
        if p.format != "echo" and not p.base_url.startswith(("http://", "https://")):
            v.fail(f"{path}.base_url", "required: an http:// or https:// URL" if not p.base_url
                   else f"must be an http:// or https:// URL, got {p.base_url!r}")
        for j, cap in enumerate(p.capabilities):
            if cap not in CAPABILITIES:
                v.fail(f"{path}.capabilities[{j}]", f"must be one of {', '.join(CAPABILITIES)}, got {cap!r}")
        for key in ("connect_timeout", "read_timeout"):
            if getattr(p, key) <= 0:
                v.fail(f"{path}.{key}", f"must be a positive number of seconds, got {getattr(p, key)}")
        if p.forward_client_key and s.api_key_env:
            # every client presents the server's key: the only client key there is to forward is fastroute's own
            v.fail(f"{path}.forward_client_key",
                   f"cannot be true while server.api_key_env is set: every client presents the server's key "
                   f"(${s.api_key_env}), so provider {p.name!r} would be sent fastroute's own key; give the "
                   "provider its own key with api_key_env instead, or unset server.api_key_env")
    _check_keys(cfg, v)
    if cfg.audit.retention_days < 0:
        v.fail("audit.retention_days", f"must be 0 (keep for ever) or more, got {cfg.audit.retention_days}")
    for i, rule in enumerate(cfg.routers):
        for key, name in _rule_provider_refs(rule):
            if name not in seen:
                known = ", ".join(sorted(seen)) or "none configured"
                v.fail(f"routers[{i}].{key}", f"unknown provider {name!r} (known: {known})")
        if isinstance(rule, DiscoverRule) and (p := cfg.provider(rule.provider)) is not None and \
                p.format not in ("ollama", "openai"):
            v.fail(f"routers[{i}].provider", f"provider {p.name!r} ({p.format}) cannot be discovered; "
                                             "discover rules need an ollama or openai provider")
        if isinstance(rule, FallbackRule) and not 0.0 <= rule.quality_bias <= 1.0:
            v.fail(f"routers[{i}].quality_bias", f"must be between 0 and 1, got {rule.quality_bias}")


def _check_keys(cfg: Config, v: _Validator) -> None:
    names: set[str] = set()
    for i, k in enumerate(cfg.keys):
        path = f"keys[{i}]"
        if k.name in names or k.name == "server" and cfg.server.api_key_env:
            v.fail(f"{path}.name", f"duplicate key name {k.name!r}" + (
                " (\"server\" is the name of [server] api_key_env's key)" if k.name == "server" else ""))
        names.add(k.name)
        _check_key(k, path, v)
    if cfg.keys:
        for i, p in enumerate(cfg.providers):
            if p.forward_client_key:
                v.fail(f"providers[{i}].forward_client_key",
                       "cannot be true while [[keys]] are configured: clients present fastroute's own keys, "
                       f"which must never reach a provider; give provider {p.name!r} its own key with api_key_env")


def _check_key(k: KeyConfig, path: str, v: _Validator) -> None:
    if not k.name:
        v.fail(f"{path}.name", "must not be empty")
    if (k.key_env is None) == (k.key_sha256 is None):
        v.fail(path, "needs exactly one of key_env (the variable holding the secret) and key_sha256")
    if k.key_sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", k.key_sha256):
        v.fail(f"{path}.key_sha256", "must be 64 hex digits (the SHA-256 of the secret)")
    if not k.models:
        v.fail(f"{path}.models", 'must name at least one model glob; ["*"] allows every model')
    rl = k.rate_limit
    for field_name in ("requests_per_minute", "tokens_per_minute"):
        value = getattr(rl, field_name) if rl is not None else None
        if value is not None and value < 1:
            v.fail(f"{path}.rate_limit.{field_name}", f"must be at least 1, got {value}")
    if k.budget is not None and (k.budget.usd < 0 or not math.isfinite(k.budget.usd)):
        v.fail(f"{path}.budget.usd", f"must be a number of dollars, 0 or more, got {k.budget.usd}")


def key_from_dict(data: Any, path: str = "", source: str = "<key>") -> KeyConfig:
    """One key as ``[[keys]]`` holds it (a dict), validated as the config validates it: the admin
    API's keys and the config's are one shape.  ConfigError names the JSON path (under ``path``)."""
    v = _Validator(source)
    k = v.build(KeyConfig, data, path)
    _check_key(k, path, v)
    return k


def _check_redis_url(v: _Validator, section: str, url: str) -> None:
    """A Redis URL of ``[events]`` or ``[storage]``: redis, rediss or unix, and no password in it."""
    scheme, _, rest = url.partition("://")
    if scheme not in ("redis", "rediss", "unix"):
        v.fail(f"{section}.redis_url", "must be a redis://, rediss:// or unix:// URL")
    query = rest.partition("?")[2]
    if "@" in rest.partition("/")[0] or any(p.partition("=")[0] == "password" for p in query.split("&")):
        v.fail(f"{section}.redis_url", f"must not hold a password: name an env var in {section}.redis_password_env")


def _check_storage(s: StorageConfig, v: _Validator) -> None:
    if s.kind not in STORAGE_KINDS:
        v.fail("storage.kind", f"must be one of {', '.join(STORAGE_KINDS)}, got {s.kind!r}")
    if s.path is not None and not s.path:
        v.fail("storage.path", "must not be empty (leave it out for the default location)")
    if s.memory_max_bytes < 1:
        v.fail("storage.memory_max_bytes", f"must be positive, got {s.memory_max_bytes}")
    if s.kind == "redis":
        if s.redis_url is None:
            v.fail("storage.redis_url", 'required with kind = "redis"')
        _check_redis_url(v, "storage", s.redis_url)
    else:
        for key in ("redis_url", "redis_password_env"):
            if getattr(s, key) is not None:
                v.fail(f"storage.{key}", f'only used with kind = "redis" (kind is {s.kind!r})')


def _check_cache(cfg: Config, v: _Validator) -> None:
    c = cfg.cache
    if c.kind is not None and c.kind not in ("memory", "redis"):
        v.fail("cache.kind", f"must be memory or redis, got {c.kind!r}")
    if c.kind == "redis" and cfg.storage.kind != "redis":
        v.fail("cache.kind", f'"redis" is the Redis of [storage]: it needs [storage] kind = "redis" '
               f'(kind is {cfg.storage.kind!r})')
    if c.ttl_s <= 0:
        v.fail("cache.ttl_s", f"must be above 0, got {c.ttl_s}")
    if c.max_entries < 1:
        v.fail("cache.max_entries", f"must be at least 1, got {c.max_entries}")
    if c.max_bytes < 1024:
        v.fail("cache.max_bytes", f"must be at least 1024, got {c.max_bytes}")
    if not c.max_temperature >= 0:
        v.fail("cache.max_temperature", f"must be 0 or more, got {c.max_temperature}")


def _rule_provider_refs(rule: Any) -> list[tuple[str, str]]:
    refs: list[tuple[str, str]] = []
    if hasattr(rule, "provider"):
        refs.append(("provider", rule.provider))
    for j, name in enumerate(getattr(rule, "fallbacks", ())):
        refs.append((f"fallbacks[{j}]", name))
    for j, name in enumerate(getattr(rule, "providers", ())):
        refs.append((f"providers[{j}]", name))
    for j, cand in enumerate(getattr(rule, "candidates", ())):
        refs.append((f"candidates[{j}].provider", cand.provider))
    return refs


def drop_unusable_providers(cfg: Config, environ: typing.Mapping[str, str] = os.environ) -> tuple[Config, list[str]]:
    """Apply ``strict = true``: drop providers whose key is unset, and the rules that need them.

    Returns the usable config and the warnings to print.  Other providers keep
    their key *name*; the key itself is read when a call is made.
    """
    warnings: list[str] = []
    dropped = {p.name for p in cfg.providers
               if p.strict and p.api_key_env and not environ.get(p.api_key_env)}
    if not dropped:
        return cfg, warnings
    for p in cfg.providers:
        if p.name in dropped:
            warnings.append(f"provider {p.name!r} dropped: strict = true and ${p.api_key_env} is not set")
    routers: list[Any] = []
    for i, rule in enumerate(cfg.routers):
        refs = _rule_provider_refs(rule)
        if hasattr(rule, "provider") and rule.provider in dropped:
            warnings.append(f"routers[{i}] ({rule.type}) dropped: its provider {rule.provider!r} was dropped")
            continue
        if set(getattr(rule, "fallbacks", ())) & dropped:
            rule = dataclasses.replace(rule, fallbacks=tuple(n for n in rule.fallbacks if n not in dropped))
        if getattr(rule, "providers", ()):
            rule = dataclasses.replace(rule, providers=tuple(n for n in rule.providers if n not in dropped))
            if not rule.providers and refs:
                warnings.append(f"routers[{i}] ({rule.type}) dropped: all its providers were dropped")
                continue
        if getattr(rule, "candidates", ()):
            kept = tuple(c for c in rule.candidates if c.provider not in dropped)
            if not kept:
                warnings.append(f"routers[{i}] ({rule.type}) dropped: all its candidates were dropped")
                continue
            rule = dataclasses.replace(rule, candidates=kept)
        routers.append(rule)
    return dataclasses.replace(
        cfg, providers=tuple(p for p in cfg.providers if p.name not in dropped), routers=tuple(routers),
    ), warnings


# ── validation helpers ──────────────────────────────────────────────────────

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


class _Validator:
    def __init__(self, source: str) -> None:
        self.source = source
        self._hints: dict[type, dict[str, Any]] = {}

    def fail(self, path: str, problem: str) -> typing.NoReturn:
        raise ConfigError(self.source, path, problem)

    def check_unknown(self, data: dict[str, Any], known: set[str], path: str) -> None:
        for key in data:
            if key not in known:
                hint = difflib.get_close_matches(key, sorted(known), n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                where = f"{path}.{key}" if path else key
                self.fail(where, f"unknown key{suggestion}; allowed: {', '.join(sorted(known))}")

    def array(self, value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            self.fail(path, f"expected an array, got {_describe(value)}")
        return value

    def build(self, cls: type, data: Any, path: str) -> Any:
        if not isinstance(data, dict):
            self.fail(path, f"expected a table, got {_describe(data)}")
        hints = self._hints.get(cls)
        if hints is None:
            hints = self._hints[cls] = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        self.check_unknown(data, set(fields), path)
        kwargs = {}
        for name, f in fields.items():
            key_path = f"{path}.{name}"
            if name in data:
                kwargs[name] = self.convert(hints[name], data[name], key_path)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.fail(key_path, "missing required key")
        return cls(**kwargs)

    def convert(self, hint: Any, value: Any, path: str) -> Any:
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin in (Union, types.UnionType):
            non_none = [a for a in args if a is not type(None)]
            if len(non_none) == 1:
                return self.convert(non_none[0], value, path)
        if origin is Literal:
            if value not in args:
                allowed = repr(args[0]) if len(args) == 1 else "one of " + ", ".join(map(repr, args))
                self.fail(path, f"must be {allowed}, got {_describe(value)}")
            return value
        if origin is tuple:
            items = self.array(value, path)
            return tuple(self.convert(args[0], item, f"{path}[{i}]") for i, item in enumerate(items))
        if origin is dict:
            if not isinstance(value, dict):
                self.fail(path, f"expected a table, got {_describe(value)}")
            return dict(value)
        if dataclasses.is_dataclass(hint):
            return self.build(hint, value, path)
        if hint is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self.fail(path, f"expected a number, got {_describe(value)}")
            return float(value)
        if hint in (bool, int, str):
            if type(value) is not hint:
                self.fail(path, f"expected {_TYPE_NAMES[hint]}, got {_describe(value)}")
            return value
        raise TypeError(f"unsupported config type {hint!r} at {path}")  # a bug in this module

    def rule(self, data: Any, path: str) -> Any:
        if not isinstance(data, dict):
            self.fail(path, f"expected a table, got {_describe(data)}")
        kind = data.get("type")
        if kind is None:
            self.fail(f"{path}.type", f"missing required key; one of {', '.join(RULE_TYPES)}")
        if kind not in RULE_TYPES:
            self.fail(f"{path}.type", f"unknown router type {_describe(kind)}; one of {', '.join(RULE_TYPES)}")
        return self.build(RULE_TYPES[kind], data, path)

    def entries(self, data: Any, path: str) -> dict[str, EntryConfig]:
        if not isinstance(data, dict):
            self.fail(path, f"expected a table, got {_describe(data)}")
        out = {}
        for name, entry in data.items():
            if not isinstance(entry, dict):
                self.fail(f"{path}.{name}", f"expected a table, got {_describe(entry)}")
            enabled = entry.get("enabled", False)
            if not isinstance(enabled, bool):
                self.fail(f"{path}.{name}.enabled", f"expected a boolean, got {_describe(enabled)}")
            settings = {k: v for k, v in entry.items() if k != "enabled"}
            out[name] = EntryConfig(enabled=enabled, settings=settings)
        return out
