"""The embedded default config: what ``fastroute serve`` runs with no config file.

- ``echo`` always (no network, no key);
- a local Ollama at 127.0.0.1:11434 if one answers (its native API), with a rule per pulled model;
- OpenAI and Anthropic (their native APIs) when their keys are set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OLLAMA_URL = "http://127.0.0.1:11434"


def probe_ollama(url: str = OLLAMA_URL, timeout: float = 0.5) -> list[str] | None:
    """The models a local Ollama has pulled, or None when nothing answers."""
    import httpx

    try:
        resp = httpx.get(f"{url}/api/tags", timeout=timeout, trust_env=False)
        resp.raise_for_status()
        return [m["name"] for m in resp.json().get("models", []) if isinstance(m, dict) and m.get("name")]
    except (httpx.HTTPError, ValueError, KeyError, AttributeError):
        return None


def embedded_config(environ: Mapping[str, str], ollama_models: list[str] | None) -> tuple[dict[str, Any], list[str]]:
    """(raw config dict, lines saying what was found)."""
    providers: list[dict[str, Any]] = [{"name": "echo", "format": "echo", "models": ["echo"]}]
    routers: list[dict[str, Any]] = [{"type": "prefix", "model_prefix": "echo", "provider": "echo"}]
    found = ["echo       built in: answers with your last message (model \"echo\")"]
    if ollama_models is not None:
        providers.append({"name": "ollama", "format": "ollama", "base_url": OLLAMA_URL,
                          "models": ollama_models, "read_timeout": 600.0})
        routers += [{"type": "prefix", "model_prefix": m, "provider": "ollama"} for m in ollama_models]
        found.append(f"ollama     at {OLLAMA_URL}: {len(ollama_models)} model(s)"
                     + (f": {', '.join(ollama_models[:6])}" + (" ..." if len(ollama_models) > 6 else "")
                        if ollama_models else ""))
    else:
        found.append(f"ollama     not found at {OLLAMA_URL}")
    if environ.get("OPENAI_API_KEY"):
        providers.append({"name": "openai", "format": "openai", "base_url": "https://api.openai.com/v1",
                          "api_key_env": "OPENAI_API_KEY", "cost_per_1m_tokens": 5.0, "quality": 90})
        routers += [{"type": "prefix", "model_prefix": p, "provider": "openai"}
                    for p in ("gpt-", "o1", "o3", "o4-", "chatgpt-")]
        found.append("openai     $OPENAI_API_KEY is set: models gpt-*, o1*, o3*, o4-*, chatgpt-*")
    else:
        found.append("openai     $OPENAI_API_KEY not set")
    if environ.get("ANTHROPIC_API_KEY"):
        providers.append({"name": "anthropic", "format": "anthropic", "base_url": "https://api.anthropic.com",
                          "api_key_env": "ANTHROPIC_API_KEY", "cost_per_1m_tokens": 15.0, "quality": 95})
        routers.append({"type": "prefix", "model_prefix": "claude-", "provider": "anthropic"})
        found.append("anthropic  $ANTHROPIC_API_KEY is set: models claude-*")
    else:
        found.append("anthropic  $ANTHROPIC_API_KEY not set")
    return {"providers": providers, "routers": routers}, found
