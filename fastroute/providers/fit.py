"""A canonical request made fit for one provider before it is translated for it.

The rule for every field a client sends: mapped to the provider's counterpart,
passed on untouched (same dialect), or refused with a clear 400 — never silently
dropped.  The exceptions are written down here and in docs/clients.md:

- hosted tools (and the records of their runs) that only the client dialect's own
  provider can run are left out, and the answer names them (``x-router-omitted-tools``);
- reasoning settings (effort, thinking) go only to models that take them (the
  ``reasoning`` capability: configured, discovered, or known from the model's name),
  because other models refuse those fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from fastroute.canonical import ChatRequest, Message, RawPart
from fastroute.errors import BadRequest
from fastroute.routing.model_names import looks_like_reasoner


#: canonical fields some formats lack, with the value that changes nothing (sent or not);
#: each format's ``TAKES`` says which it renders, and a request that sets another is refused
OPTIONAL_FIELDS = (("top_k", None), ("min_p", 0), ("frequency_penalty", 0), ("presence_penalty", 0),
                   ("repeat_penalty", 1), ("task_budget", None))


@dataclass(slots=True)
class Fitted:
    request: ChatRequest
    #: hosted tools left out, by type
    omitted: list[str] = field(default_factory=list)


def takes_reasoning(provider: object, model: str) -> bool:
    caps = provider.capabilities(model)  # type: ignore[attr-defined]
    return "reasoning" in caps if caps is not None else looks_like_reasoner(model)


def fit(request: ChatRequest, provider: object, model: str) -> Fitted:
    """``request`` as ``provider`` (serving ``model``) can take it; raises BadRequest for what it cannot.
    The one place a request is checked against a provider before it is rendered for it."""
    dialect = provider.passthrough_dialect  # type: ignore[attr-defined]
    name = provider.name  # type: ignore[attr-defined]
    if request.n is not None and request.n > 1:
        raise BadRequest(f"'n': {request.n} answers were asked for; provider '{name}' is reached through "
                         "translation, which carries one answer (send n = 1, or route to a provider of the "
                         "client's own format)", param="n")
    if request.extra and dialect is not None and dialect != request.source:
        raise _no_counterpart(sorted(_paths(request.extra)), dialect, name)
    translator = getattr(provider, "dialect", None)  # HTTP providers: what their format cannot take at all
    if translator is not None:
        translator.check_translatable(request, name)
        lacking = [key for key, neutral in OPTIONAL_FIELDS
                   if key not in translator.TAKES and getattr(request, key) not in (None, neutral)]
        if lacking:
            raise _no_counterpart(lacking, translator.NAME, name)
    changes: dict[str, object] = {}
    omitted = [kind for source, kind, _ in request.hosted_tools if source != dialect]
    if omitted:
        changes["hosted_tools"] = [t for t in request.hosted_tools if t[0] == dialect]
    messages = _without_foreign_parts(request.messages, dialect, name, omitted)
    if messages is not request.messages:
        changes["messages"] = messages
    if (request.effort is not None or request.thinking is not None) and not takes_reasoning(provider, model):
        changes.update(effort=None, thinking=None)
    if not changes:
        return Fitted(request, omitted)
    return Fitted(dataclasses.replace(request, **changes), sorted(set(omitted)))


def _no_counterpart(fields: list[str], dialect: str, provider: str) -> BadRequest:
    return BadRequest(f"{', '.join(repr(f) for f in fields)}: no counterpart in the {dialect} format of provider "
                      f"'{provider}'; fastroute refuses what it cannot pass on rather than drop it", param=fields[0])


def _paths(extra: dict[str, object]) -> list[str]:
    """``options.mirostat`` rather than ``options`` where a field holds the unmapped part of an object."""
    out = []
    for key, value in extra.items():
        out += [f"{key}.{k}" for k in value] if key == "options" and isinstance(value, dict) else [key]
    return out


def _without_foreign_parts(messages: list[Message], dialect: str | None, provider: str,
                           omitted: list[str]) -> list[Message]:
    """Content blocks only the client's own dialect knows: hosted-tool records left out, others refused."""
    if not any(isinstance(p, RawPart) and p.dialect != dialect for m in messages for p in m.content):
        return messages
    out = []
    for i, m in enumerate(messages):
        kept = []
        for p in m.content:
            if not isinstance(p, RawPart) or p.dialect == dialect:
                kept.append(p)
            elif p.hosted:
                omitted.append(str(p.block.get("type")))
            else:
                kind = repr(p.block.get("type"))[:60]
                source = p.block.get("source")
                if isinstance(source, dict) and isinstance(source.get("type"), str):
                    kind += f" with a source of type {source['type'][:40]!r}"
                raise BadRequest(f"messages[{i}]: content block type {kind} has no counterpart "
                                 f"in the format of provider '{provider}'", param=f"messages[{i}].content")
        out.append(dataclasses.replace(m, content=kept) if len(kept) != len(m.content) else m)
    return out
