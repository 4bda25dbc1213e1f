"""Plugins: hooks around every request, streamed or not.

    on_start -> (classify) -> pre_request -> route -> provider -> post_response -> on_end

Each hook returns ``None`` (continue), :data:`MODIFIED` (it changed
``ctx.request`` or ``ctx.response`` in place) or :class:`Stop` (before the
provider: the plugin's ``ctx.response`` is the answer and no provider is
called).  An error in ``on_start`` or ``pre_request`` fails the request with a
500 naming the plugin; in ``post_response`` or ``on_end`` it is logged and the
request goes on.  For streams, ``post_response`` sees the assembled answer after
the stream, when it can no longer be changed.  ``on_end`` runs for every request
that got past ``on_start``, failed ones too, with ``ctx.error`` saying why.

Enabled by ``[plugins.<id>] enabled = true`` or per request with
``"plugins": [{"id": ..., ...settings}]`` in the body (removed before
forwarding; request settings override config).  Built in: ``response-healing``
and ``pareto-router``; others load from the entry-point group ``fastroute.plugins``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar

from fastroute.canonical import ChatRequest, ChatResponse
from fastroute.config import Config
from fastroute.errors import BadRequest, ConfigError

ENTRY_POINT_GROUP = "fastroute.plugins"
MODIFIED = "modified"


@dataclass(slots=True)
class Stop:
    """End the request here; ``ctx.response`` holds the answer."""

    reason: str = ""


@dataclass(slots=True)
class PluginContext:
    request: ChatRequest
    settings: dict[str, Any]
    tags: list[str]
    response: ChatResponse | None = None
    #: a plugin may pin the provider (routing then only picks the model)
    forced_provider: str | None = None
    #: shared scratch space between a plugin's hooks for one request
    state: dict[str, Any] = field(default_factory=dict)
    #: set when the request ends in an error (``on_end`` still runs; ``response`` may be None)
    error: str | None = None


class Plugin:
    """Base class: override the hooks you need."""

    id: ClassVar[str] = ""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    async def on_start(self, ctx: PluginContext) -> Any:
        return None

    async def pre_request(self, ctx: PluginContext) -> Any:
        return None

    async def post_response(self, ctx: PluginContext) -> Any:
        return None

    async def on_end(self, ctx: PluginContext) -> None:
        return None


def builtin_plugins() -> dict[str, type[Plugin]]:
    from fastroute.plugins.pareto_router import ParetoRouterPlugin
    from fastroute.plugins.response_healing import ResponseHealingPlugin

    return {ResponseHealingPlugin.id: ResponseHealingPlugin, ParetoRouterPlugin.id: ParetoRouterPlugin}


def available_plugins() -> dict[str, type[Plugin]]:
    """Built-ins, then third-party plugins from the ``fastroute.plugins`` entry points."""
    found = builtin_plugins()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in found:
            found[ep.name] = ep  # type: ignore[assignment]  # loaded when first used
    return found


class PluginSet:
    """The plugins a config knows, and which are on for a given request."""

    def __init__(self, config: Config) -> None:
        self.classes = available_plugins()
        self.config = config.plugins
        for name in self.config:
            if name not in self.classes:
                raise ConfigError(config.source, f"plugins.{name}",
                                  f"unknown plugin (known: {', '.join(sorted(self.classes))}; third-party "
                                  f"plugins register in the {ENTRY_POINT_GROUP!r} entry-point group)")
        self.enabled = [name for name, entry in self.config.items() if entry.enabled]

    def _class(self, name: str) -> type[Plugin]:
        cls = self.classes[name]
        if not isinstance(cls, type):  # an entry point not loaded yet
            cls = self.classes[name] = cls.load()
        return cls

    def for_request(self, requested: Any) -> list[tuple[Plugin, dict[str, Any]]]:
        """(plugin, settings) for this request: configured ones plus the body's ``plugins`` array."""
        settings = {name: dict(self.config[name].settings) for name in self.enabled}
        if requested is not None:
            if not isinstance(requested, list):
                raise BadRequest("'plugins' must be an array of {\"id\": ..., settings...} objects", param="plugins")
            for i, item in enumerate(requested):
                if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                    raise BadRequest(f"'plugins[{i}]' must be an object with an 'id'", param=f"plugins[{i}]")
                name = item["id"]
                if name not in self.classes:
                    raise BadRequest(f"unknown plugin {name!r} (known: {', '.join(sorted(self.classes))})",
                                     param=f"plugins[{i}].id")
                base = dict(self.config[name].settings) if name in self.config else {}
                settings[name] = {**base, **{k: v for k, v in item.items() if k != "id"}}
        return [(self._class(name)(s), s) for name, s in settings.items()]
