"""Classifiers: tags on requests (before routing) and on responses (after).

- ``keyword`` (``[classifiers.keyword]``): the lowercased system prompt and all
  message text against ``[classifiers.keyword.tags]`` (tag -> words); every tag
  with a hit is attached.  The matcher is built once (an Aho-Corasick automaton,
  compiled, see ``_speedups``).
- ``refusal`` (``[response_classifiers.refusal]``): tags ``refusal`` on answers
  that decline; ``phrases`` replaces the default phrases.

A classifier that fails is logged and its tags skipped; the request goes on.
"""

from __future__ import annotations

import logging
from typing import Any

from fastroute.canonical import ChatRequest, TextPart
from fastroute.config import Config
from fastroute.errors import ConfigError

log = logging.getLogger("fastroute.classifiers")

DEFAULT_REFUSAL_PHRASES = (
    "i can't help with", "i cannot help with", "i can't assist with", "i cannot assist with",
    "i'm sorry, but i can't", "i'm sorry, but i cannot", "i am sorry, but i cannot", "i'm unable to help",
    "i am unable to help", "i won't be able to help", "i can't provide", "i cannot provide",
    "i must decline", "as an ai language model, i cannot",
)


def request_text(request: ChatRequest) -> str:
    """The system prompt and all message text, the way classifiers read a request."""
    parts = [request.system or ""]
    for m in request.messages:
        parts.extend(p.text for p in m.content if isinstance(p, TextPart))
    return "\n".join(parts)


class KeywordClassifier:
    id = "keyword"

    def __init__(self, settings: dict[str, Any], where: tuple[str, str]) -> None:
        from fastroute._speedups import KeywordMatcher

        tags = settings.get("tags", {})
        if not isinstance(tags, dict):
            raise ConfigError(where[0], f"{where[1]}.tags", "expected a table of tag = [words]")
        for tag, words in tags.items():
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise ConfigError(where[0], f"{where[1]}.tags.{tag}", "expected an array of strings")
        self.matcher = KeywordMatcher(tags)

    def classify(self, text: str) -> list[str]:
        return self.matcher.match(text)


class RefusalClassifier:
    id = "refusal"

    def __init__(self, settings: dict[str, Any], where: tuple[str, str]) -> None:
        phrases = settings.get("phrases", DEFAULT_REFUSAL_PHRASES)
        if not isinstance(phrases, (list, tuple)) or not all(isinstance(p, str) for p in phrases):
            raise ConfigError(where[0], f"{where[1]}.phrases", "expected an array of strings")
        self.phrases = tuple(p.lower() for p in phrases if p)

    def classify(self, text: str) -> list[str]:
        lowered = text.lower()
        return ["refusal"] if any(p in lowered for p in self.phrases) else []


REQUEST_CLASSIFIERS: dict[str, type] = {"keyword": KeywordClassifier}
RESPONSE_CLASSIFIERS: dict[str, type] = {"refusal": RefusalClassifier}


def build_classifiers(config: Config) -> tuple[list[Any], list[Any]]:
    """The enabled (request, response) classifiers; unknown ids and bad settings fail at startup."""
    built: list[list[Any]] = [[], []]
    for slot, (section, entries, known) in enumerate((
            ("classifiers", config.classifiers, REQUEST_CLASSIFIERS),
            ("response_classifiers", config.response_classifiers, RESPONSE_CLASSIFIERS))):
        for name, entry in entries.items():
            cls = known.get(name)
            if cls is None:
                raise ConfigError(config.source, f"{section}.{name}",
                                  f"unknown classifier (known: {', '.join(known)})")
            if entry.enabled:
                built[slot].append(cls(entry.settings, (config.source, f"{section}.{name}")))
    return built[0], built[1]


def run_all(classifiers: list[Any], text: str) -> list[str]:
    tags: list[str] = []
    for c in classifiers:
        try:
            found = c.classify(text)
        except Exception:
            log.exception("classifier %r failed; its tags are skipped", c.id)
            continue
        tags.extend(t for t in found if t not in tags)
    return tags
