"""How a worker learns that the server is stopping, and makes sure Granian learns it too.

The main process, asked to stop (Ctrl-C, SIGTERM), first creates a marker file
(``FASTROUTE_STOPPING_FILE``), then Granian signals its workers.  In each
worker a :class:`StopWatch` thread watches for the marker and then:

- runs the app's stop callbacks on its event loop (the endless event feeds end,
  so the graceful stop waits only for real requests);
- makes sure Granian's worker saw a stop signal.  Workers are forked with the
  main process's signal handlers, so a signal that lands before Granian has
  installed the worker's own (while the worker boots) is swallowed, and the main
  process would wait for the kill timeout.  The watch notes such an early
  signal (:func:`note_early_signal`), and once the worker serves, if Granian's
  handler has seen no signal, sends one: once a second until it has.  It never
  repeats a signal Granian saw, since a second one turns a graceful stop into
  an abrupt one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

#: a file the main process creates when asked to stop, which the workers watch for
ENV_STOPPING = "FASTROUTE_STOPPING_FILE"
#: how often a worker looks for the marker (seconds)
POLL_S = 0.2
#: the pause between the app's start and Granian's server listening for signals, with margin
SERVE_SETTLE_S = 0.2

#: set in a worker that got a stop signal while still booting, before Granian listened for one
_early_signal = threading.Event()


def note_early_signal() -> None:
    """Called from the handler a worker inherited by fork: the signal is repeated once Granian listens."""
    _early_signal.set()


class StopWatch:
    def __init__(self, marker: str) -> None:
        self.marker = marker
        #: run on the worker's event loop when the stop is asked for
        self.callbacks: list[Callable[[], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._serving = threading.Event()   # the app has started (Granian's handler is in place by then)
        self._watching = threading.Event()  # Granian's worker took its handlers from our wrapper
        self._seen = threading.Event()      # Granian's worker handler got a stop signal

    def start(self, app: Any) -> None:
        """Watch Granian's worker signal handling, learn the loop when ``app`` starts, watch the marker."""
        self._wrap_granian_signals()

        async def serving(application: Any) -> None:
            self._loop = asyncio.get_running_loop()
            self._serving.set()

        app.on_start += serving  # after the app's own start-up steps
        threading.Thread(target=self._run, name="fastroute-stop-watch", daemon=True).start()

    def _wrap_granian_signals(self) -> None:
        try:
            from granian import _signals
        except ImportError:
            return
        original = getattr(_signals, "set_loop_signals", None)
        if original is None:
            return  # another Granian: the watch still ends the feeds, and leaves signals alone
        seen, watching = self._seen, self._watching

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

    def _run(self) -> None:
        while not (_early_signal.wait(POLL_S) or os.path.exists(self.marker)):
            pass
        self._serving.wait()
        loop = self._loop
        if loop is not None:
            for callback in self.callbacks:
                try:
                    loop.call_soon_threadsafe(callback)
                except RuntimeError:  # the loop is already closed: nothing left to end
                    return
        if not self._watching.is_set():
            return  # this Granian set its handlers some other way: we cannot tell if it saw the signal
        time.sleep(SERVE_SETTLE_S)
        while not self._seen.is_set():
            os.kill(os.getpid(), signal.SIGTERM)
            self._seen.wait(1.0)
