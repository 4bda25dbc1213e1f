"""A real redis-server for the tests (Debian's, installed by .ci/run): started on a free port of
127.0.0.1, with a password when asked, optionally writing every command to its append-only
file before answering (so a SIGKILL loses nothing and a restart on the same directory has it
all back).  Without redis-server the test is skipped — or fails, with FASTROUTE_REQUIRE_REDIS."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

REDIS = shutil.which("redis-server")
#: the password the tests' servers require; no output of fastroute may ever hold it
PASSWORD = "redis-pw-never-shown-4c1d"


def need_redis() -> None:
    if REDIS is None:
        if os.environ.get("FASTROUTE_REQUIRE_REDIS"):
            pytest.fail("redis-server is required (FASTROUTE_REQUIRE_REDIS is set) but not installed")
        pytest.skip("no redis-server on this machine (.ci/run installs Debian's)")


def redis_url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


class RedisServer:
    def __init__(self, port: int, password: str | None = None, aof_dir: Path | None = None) -> None:
        need_redis()
        assert REDIS is not None
        self.port = port
        self.url = redis_url(port)
        args = [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        if aof_dir is not None:
            args += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(aof_dir)]
        else:
            args += ["--appendonly", "no"]
        if password:
            args += ["--requirepass", password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.kill()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
