"""OpenTelemetry for ``[telemetry] enabled = true``: traces and metrics over OTLP/HTTP.

Nothing here imports ``opentelemetry``: :func:`open_telemetry` does, in the worker, only when the
config turns telemetry on.  Off, the pipeline holds ``None`` and pays one ``is None`` a request.

    otel.py     the providers (tracer, meter, OTLP exporters that warn once) and :class:`Telemetry`
    spans.py    one request's spans (:class:`~fastroute.telemetry.spans.Trace`) and their attributes
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

from fastroute.errors import ConfigError

if TYPE_CHECKING:
    from fastroute.telemetry.otel import Telemetry

#: what ``[telemetry] enabled = true`` needs installed
PACKAGES = ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")
INSTALL = "pip install 'fastroute[otel]'"

__all__ = ["open_telemetry", "require_packages"]


def require_packages(config: Any) -> None:
    """A ConfigError naming the install command when telemetry is on and its packages are missing
    (found without importing them: the CLI checks this before any worker starts)."""
    if not config.telemetry.enabled:
        return
    for name in PACKAGES:
        try:
            found = find_spec(name) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            raise ConfigError(config.source, "telemetry.enabled",
                              f"is true, but the OpenTelemetry package {name} is not installed: {INSTALL}")


def open_telemetry(config: Any, provider_formats: dict[str, str] | None = None) -> Telemetry | None:
    """The worker's telemetry, or None when ``[telemetry]`` is off (then nothing is imported)."""
    if not config.telemetry.enabled:
        return None
    require_packages(config)
    from fastroute.telemetry.otel import Telemetry

    return Telemetry(config.telemetry, provider_formats or {})
