"""Which base URL each client family takes, and what to tell a client whose base URL is wrong.

OpenAI clients (Chat Completions and Responses) take ``http://host:port/v1`` and add
``/chat/completions`` or ``/responses``; Anthropic clients take ``http://host:port`` and
add ``/v1/messages``; Ollama clients take ``http://host:port`` and add ``/api/chat``.
The startup banner says so, and a request whose path shows the base URL was wrong
(``/v1`` twice, or missing) gets a 404 that says which one to use.
"""

from __future__ import annotations

from dataclasses import dataclass

OPENAI, ANTHROPIC, OLLAMA = "openai", "anthropic", "ollama"


@dataclass(frozen=True, slots=True)
class Family:
    dialect: str
    label: str
    #: who, in a message
    who: str
    #: what follows the origin in the base URL
    base_path: str
    #: what its clients add to the base URL, for the banner
    adds: str
    #: the endpoints, as they follow the base URL: path -> method
    endpoints: dict[str, str]


FAMILIES = (
    Family(OPENAI, "OpenAI Chat and Responses", "OpenAI clients", "/v1", "/chat/completions, /responses, /models",
           {"/chat/completions": "POST", "/responses": "POST", "/models": "GET"}),
    Family(ANTHROPIC, "Anthropic Messages", "Anthropic clients", "", "/v1/messages, so no /v1 here",
           {"/v1/messages": "POST", "/v1/messages/count_tokens": "POST", "/v1/models": "GET"}),
    Family(OLLAMA, "Ollama", "Ollama clients", "", "/api/chat",
           {"/api/chat": "POST", "/api/tags": "GET", "/api/show": "POST", "/api/version": "GET"}),
)
_BY_DIALECT = {f.dialect: f for f in FAMILIES}
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def origin(host: str, port: int) -> str:
    """``http://host:port`` for clients on this machine (an address that listens everywhere is
    reached at the loopback one)."""
    host = _WILDCARDS.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def listens_everywhere(host: str) -> bool:
    return host in _WILDCARDS


def base_url(dialect: str, at: str) -> str:
    return at + _BY_DIALECT[dialect].base_path


def banner(at: str) -> list[tuple[str, str, str]]:
    """(label, base URL, what its clients add), one per client family."""
    return [(f.label, at + f.base_path, f.adds) for f in FAMILIES]


def explain_miss(method: str, path: str, at: str, anthropic_client: bool) -> tuple[str, str]:
    """(dialect of the error, message) for a request no route took: when the path is a
    known endpoint behind a wrong base URL (``/v1`` twice, or missing), which base URL to use."""
    rest, v1s = path, 0
    while rest == "/v1" or rest.startswith("/v1/"):
        rest, v1s = rest[3:], v1s + 1
    where = f"no route for {method} {path}"
    if rest.startswith("/models/"):
        rest = "/models"
    if rest in ("/messages", "/messages/count_tokens") or (rest == "/models" and anthropic_client):
        family, endpoint = _BY_DIALECT[ANTHROPIC], "/v1" + rest
    elif rest.startswith("/api/"):
        family, endpoint = _BY_DIALECT[OLLAMA], rest
    elif rest in ("/chat/completions", "/responses", "/models"):
        family, endpoint = _BY_DIALECT[OPENAI], rest
    else:
        return (ANTHROPIC if anthropic_client else OPENAI), where
    wanted = family.base_path.count("/v1") + endpoint.count("/v1")  # how many /v1 the path should hold
    base = at + family.base_path
    if endpoint not in family.endpoints:  # an Ollama endpoint fastroute does not serve
        served = ", ".join(family.endpoints)
        return family.dialect, f"{where}: fastroute serves Ollama's {served}"
    if v1s == wanted:  # the right path: the wrong method, or an endpoint this build lacks
        method_wanted = family.endpoints[endpoint]
        return family.dialect, where if method == method_wanted else f"{where}: use {method_wanted}"
    how = "has /v1 twice" if v1s > wanted and wanted else "has a /v1 too many" if v1s > wanted else "lacks /v1"
    full = family.base_path + endpoint
    advice = (f"{family.who} take the base URL {base}"
              + (", without /v1" if not family.base_path and v1s > wanted else "")
              + f" (they add {endpoint})")
    if family.dialect == ANTHROPIC and v1s < wanted:  # a client that adds only /messages wants /v1 in its base
        advice += f"; a client that adds only {endpoint[3:]} takes {at}/v1"
    return family.dialect, f"{where}: the path {how}. fastroute serves this at {full}. {advice}"
