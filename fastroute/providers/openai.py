"""Providers that speak OpenAI's Chat Completions (OpenAI, llama.cpp, vLLM, LM Studio, Ollama's /v1 ...)."""

from __future__ import annotations

from fastroute.formats import openai as dialect
from fastroute.providers.http import HTTPProvider


class OpenAIProvider(HTTPProvider):
    dialect = dialect

    def endpoint(self, base: str) -> str:
        return base + "/chat/completions"
