"""Plain helpers the benchmark modules share; their shared fixtures are in ``conftest.py``.

The event loop (uvloop when installed) and the free port are ``e2e.py``'s, so that the scripts
and the benchmarks choose them in one place.  A compiled twin and its Python one are chosen by
:func:`twin` (``--benchmark-group-by=group,param:impl`` puts them side by side).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from e2e import _new_loop as new_loop
from e2e import free_port

__all__ = ["free_port", "new_loop", "running", "twin"]

T = TypeVar("T")


def twin(impl: str, compiled: T | None, python: T) -> T:
    """The twin an ``impl`` parameter names, ``"compiled"`` or ``"python"``; the compiled one
    skips the benchmark when it was not built (or ``FASTROUTE_NO_EXTENSIONS`` is set)."""
    if impl != "compiled":
        return python
    if compiled is None:
        pytest.skip("compiled speedups not available")
    return compiled


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def running(cmd: list[str], port: int, health: str | None = None,
            timeout: float = 20.0) -> Iterator[subprocess.Popen[bytes]]:
    """``cmd`` in a process group of its own (its output discarded), once it listens on ``port``
    of 127.0.0.1 or, given ``health`` (a path), once ``GET health`` there answers 200.  At the end
    its whole group gets SIGTERM, and SIGKILL if it has not gone within 5 s.

    (Not ``e2e.Children``: its ``preexec_fn`` is unsafe in pytest's process, which may have threads.)"""
    ready: Callable[[], bool] = ((lambda: _healthy(f"http://127.0.0.1:{port}{health}")) if health
                                 else (lambda: _listening(port)))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[1:]} exited with {proc.returncode}")
            if ready():
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[1:]} did not {'answer' if health else 'listen'} within {timeout:g} s")
            time.sleep(0.05)
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
