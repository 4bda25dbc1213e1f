"""fastroute: a fast, local-first LLM router.

Any OpenAI, Anthropic or Ollama client points at fastroute; it picks a provider
by rules, calls it in its own dialect and answers in the client's dialect.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
