"""Run the application under Granian (ASGI, uvloop), one or many workers.

The CLI validates the config in the parent process, then hands the raw config
to the workers through the environment (``FASTROUTE_CONFIG``): it holds the
names of the key variables, never a key.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import tempfile
from typing import Any

import orjson

from fastroute.config import config_from_dict, drop_unusable_providers
from fastroute.recording.relay import ENV_DIR as ENV_EVENTS_DIR
from fastroute.server.reload import ENV_RELOAD, Board, Origin, Reloading, reload_in_main
from fastroute.server.stopping import ENV_STOPPING, StopWatch, note_early_signal

ENV_CONFIG = "FASTROUTE_CONFIG"


def app_factory() -> Any:
    """Granian's target (``factory=True``): build the app in the worker.  A worker started after a
    reload (Granian respawns one that died) starts on the last config published, not the first."""
    build_app = _app_builder()
    payload = orjson.loads(os.environ[ENV_CONFIG])
    folder = os.environ.get(ENV_RELOAD)
    board = Board(folder) if folder else None
    published = board.read() if board is not None else None
    source, raw, number = (published.source, published.raw, published.generation) if published is not None \
        else (payload["source"], payload["data"], 0)
    config, _ = drop_unusable_providers(config_from_dict(raw, source))
    marker = os.environ.get(ENV_STOPPING)
    watch = StopWatch(marker) if marker else None
    origin = Origin(payload.get("path"), payload["source"], payload.get("overrides") or {})
    app = build_app(config, watch, Reloading(origin, board, raw, number))
    if watch is not None:
        watch.start(app)
    # Everything built so far lives as long as the worker: keep it out of the collector's
    # sight, so full collections stay short (measured: p99 at c=32 from ~40 ms to ~15 ms).
    gc.collect()
    gc.freeze()
    return app


def _app_builder() -> Any:
    """``build_app``, BlackSheep imported without pydantic.

    BlackSheep imports pydantic when it is installed (the openai and anthropic SDKs bring it),
    to bind handler arguments that are pydantic models and to document them; fastroute has none,
    and BlackSheep does without it (each use is behind ``except ImportError``).  Importing it
    costs a worker ~6 MB of RSS (pydantic and pydantic-core, measured).  So pydantic is hidden
    while BlackSheep is first imported, and importable again right after (a plugin may use it)."""
    hide = "pydantic" not in sys.modules
    if hide:
        sys.modules["pydantic"] = None  # type: ignore[assignment]  # an import of it raises ImportError
    try:
        from fastroute.server.app import build_app
    finally:
        if hide and sys.modules.get("pydantic", ...) is None:
            del sys.modules["pydantic"]
    return build_app


def loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def http_settings(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """Granian's HTTP/1 and HTTP/2 settings for ``[server] max_header_bytes``: a request head beyond
    :func:`~fastroute.limits.granian_buffer` is cut by Granian (431, empty body, connection closed);
    one over the limit but within it reaches the app, which answers 431 in the client's dialect."""
    from granian.http import HTTP1Settings, HTTP2Settings

    from fastroute.limits import granian_buffer

    size = granian_buffer(config_from_dict(raw, source).server.max_header_bytes)
    return {"http1_settings": HTTP1Settings(max_buffer_size=size),
            "http2_settings": HTTP2Settings(max_headers_size=size)}


def serve(raw: dict[str, Any], source: str, host: str, port: int, workers: int, grace_s: float,
          path: str | None = None, overrides: dict[str, Any] | None = None) -> None:
    """Serve ``raw`` (``overrides``, the command line's ``[server]`` values, merged in); ``path``:
    the file it was read from, read again on a reload (None: nothing to reload)."""
    import threading

    from granian import Granian
    from granian.constants import Interfaces, Loops

    os.environ[ENV_CONFIG] = orjson.dumps({"source": source, "data": raw, "path": path,
                                           "overrides": overrides or {}}).decode()
    shared = tempfile.mkdtemp(prefix="fastroute-")
    os.environ[ENV_STOPPING] = os.path.join(shared, "stopping")
    os.environ[ENV_RELOAD] = os.path.join(shared, "reload")
    board = Board(os.environ[ENV_RELOAD])
    origin = Origin(path, source, overrides or {})
    if workers > 1:
        # every worker's events reach every viewer, and /metrics adds all workers up
        os.environ[ENV_EVENTS_DIR] = os.path.join(shared, "events")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(shared, "metrics")
        os.makedirs(os.environ[ENV_EVENTS_DIR])
        os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"])

    main_pid = os.getpid()

    class Server(Granian):  # type: ignore[misc, valid-type]
        def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
            if os.getpid() != main_pid:  # a booting worker, with the handler it inherited by fork
                note_early_signal()  # its stop watch says it again once Granian listens
                return
            # Tell the workers first: endless responses (the event feeds) end now, so the
            # graceful stop only waits for real requests.
            with open(os.environ[ENV_STOPPING], "w"):
                pass
            super().signal_handler_interrupt(*args, **kwargs)

        def signal_handler_reload(self, *args: Any, **kwargs: Any) -> None:
            """SIGHUP: the config read again and published to the workers (:mod:`fastroute.server.reload`),
            instead of Granian's respawn of every worker, which would cut the open streams."""
            if os.getpid() != main_pid:  # a worker, with the handler it inherited by fork: not its to do
                return
            threading.Thread(target=reload_in_main, args=(origin, board, raw), name="fastroute-reload",
                             daemon=True).start()

    server = Server(
        "fastroute.server.runner:app_factory", factory=True, address=host, port=port,
        interface=Interfaces.ASGI, workers=workers,
        loop=Loops.uvloop if loop_name() == "uvloop" else Loops.asyncio,
        workers_kill_timeout=max(1, int(round(grace_s))), log_access=False, **http_settings(raw, source),
    )
    try:
        server.serve()
    finally:
        shutil.rmtree(shared, ignore_errors=True)
