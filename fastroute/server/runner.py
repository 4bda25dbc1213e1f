"""Run the application under Granian (ASGI, uvloop), one or many workers.

The CLI validates the config in the parent process, then hands the raw config
to the workers through the environment (``FASTROUTE_CONFIG``): it holds the
names of the key variables, never a key.
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import tempfile
import threading
import time
from typing import Any

import orjson

from fastroute.config import config_from_dict, drop_unusable_providers
from fastroute.recording.relay import ENV_DIR as ENV_EVENTS_DIR

ENV_CONFIG = "FASTROUTE_CONFIG"
#: a file the main process creates when asked to stop, which the workers watch for
ENV_STOPPING = "FASTROUTE_STOPPING_FILE"
#: set in a worker that got a stop signal while still booting, before Granian listened for one
_early_signal = threading.Event()
#: the pause between the app's start and Granian's server listening for signals, with margin
SERVE_SETTLE_S = 0.2


class StopGuard:
    """A worker's guard against a stop signal that Granian never sees.

    Workers are forked with the main process's signal handlers.  A SIGTERM (or
    Ctrl-C's SIGINT, which reaches the whole process group) that lands before
    Granian has installed the worker's own handler is swallowed, and the main
    process then waits for the kill timeout before killing the worker.  The guard
    notes such an early signal (or the main process's stop marker file), waits
    until the worker serves, and if Granian's handler has still seen no signal by
    then, sends one — once each second until it has.  It never repeats a signal
    Granian saw: a second one turns a graceful stop into an abrupt one.
    """

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.serving = threading.Event()   # the app has started (Granian's handler is in place by then)
        self.watching = threading.Event()  # Granian's worker took its handlers from our wrapper
        self.seen = threading.Event()      # Granian's worker handler got a stop signal

    def install(self) -> bool:
        """Watch Granian's worker signal handling; False (and no guard) if this Granian is not the known one."""
        try:
            from granian import _signals
        except ImportError:
            return False
        original = getattr(_signals, "set_loop_signals", None)
        if original is None:
            return False
        seen, watching = self.seen, self.watching

        def set_loop_signals(loop: Any) -> Any:
            event = original(loop)  # Granian's handlers, and the event its server stops on
            watching.set()

            def handler(signum: int, frame: Any) -> None:  # what Granian's does, noted
                seen.set()
                event.set()

            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, handler, sig, None)
            return event

        _signals.set_loop_signals = set_loop_signals  # looked up by Granian's worker when it starts
        threading.Thread(target=self._run, name="fastroute-stop-guard", daemon=True).start()
        return True

    def _run(self) -> None:
        while not (_early_signal.wait(0.25) or os.path.exists(self.marker)):
            pass
        self.serving.wait()
        if not self.watching.is_set():
            return  # this Granian set its handlers some other way: we cannot tell if it saw the signal
        time.sleep(SERVE_SETTLE_S)
        while not self.seen.is_set():
            os.kill(os.getpid(), signal.SIGTERM)
            self.seen.wait(1.0)


def app_factory() -> Any:
    """Granian's target (``factory=True``): build the app in the worker."""
    from fastroute.server.app import build_app

    payload = orjson.loads(os.environ[ENV_CONFIG])
    config, _ = drop_unusable_providers(config_from_dict(payload["data"], payload["source"]))
    app = build_app(config)
    marker = os.environ.get(ENV_STOPPING)
    if marker:
        guard = StopGuard(marker)
        if guard.install():

            async def serving(application: Any) -> None:
                guard.serving.set()

            app.on_start += serving  # after the app's own start-up steps
    # Everything built so far lives as long as the worker: keep it out of the collector's
    # sight, so full collections stay short (measured: p99 at c=32 from ~40 ms to ~15 ms).
    gc.collect()
    gc.freeze()
    return app


def loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def serve(raw: dict[str, Any], source: str, host: str, port: int, workers: int, grace_s: float) -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops

    os.environ[ENV_CONFIG] = orjson.dumps({"source": source, "data": raw}).decode()
    shared = tempfile.mkdtemp(prefix="fastroute-")
    os.environ[ENV_STOPPING] = os.path.join(shared, "stopping")
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
                _early_signal.set()  # its stop guard says it again once Granian listens
                return
            # Tell the workers first: endless responses (the event feeds) end now, so the
            # graceful stop only waits for real requests.
            with open(os.environ[ENV_STOPPING], "w"):
                pass
            super().signal_handler_interrupt(*args, **kwargs)

    server = Server(
        "fastroute.server.runner:app_factory", factory=True, address=host, port=port,
        interface=Interfaces.ASGI, workers=workers,
        loop=Loops.uvloop if loop_name() == "uvloop" else Loops.asyncio,
        workers_kill_timeout=max(1, int(round(grace_s))), log_access=False,
    )
    try:
        server.serve()
    finally:
        shutil.rmtree(shared, ignore_errors=True)
