"""Providers: one class per upstream dialect, built from the config."""

from __future__ import annotations

from fastroute.config import Config
from fastroute.errors import ConfigError
from fastroute.providers.base import Provider
from fastroute.providers.anthropic import AnthropicProvider
from fastroute.providers.echo import EchoProvider
from fastroute.providers.ollama import OllamaProvider
from fastroute.providers.openai import OpenAIProvider
from fastroute.providers.transport import UpstreamClient

PROVIDER_CLASSES: dict[str, type[Provider]] = {
    "openai": OpenAIProvider, "anthropic": AnthropicProvider, "ollama": OllamaProvider, "echo": EchoProvider,
}

__all__ = ["Provider", "build_providers", "PROVIDER_CLASSES"]


def build_providers(config: Config, client: UpstreamClient | None) -> dict[str, Provider]:
    for i, p in enumerate(config.providers):
        if p.format not in PROVIDER_CLASSES:
            raise ConfigError(config.source, f"providers[{i}].format",
                              f"{p.format!r} providers are not supported by this version yet "
                              f"(supported: {', '.join(PROVIDER_CLASSES)}); an OpenAI-compatible "
                              f"endpoint of the same server can be used with format = \"openai\"")
    return {p.name: PROVIDER_CLASSES[p.format](p, client) for p in config.providers}
