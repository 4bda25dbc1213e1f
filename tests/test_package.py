"""The package's public face, and that importing it does no work."""

from __future__ import annotations

import subprocess
import sys

import fastroute


def test_public_names() -> None:
    assert fastroute.__all__ == ["__version__"]
    assert fastroute.__version__.count(".") == 2


def test_import_is_light() -> None:
    code = (
        "import sys, fastroute, fastroute.cli, fastroute.config, fastroute.pipeline;"
        "heavy = [m for m in ('granian', 'aiohttp', 'httpx', 'textual', 'blacksheep') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_no_extensions_switch_forces_python_at_runtime() -> None:
    import os

    code = "import fastroute._speedups as s; print(s.implementation(), s.SSEDecoder.__module__)"
    env = {**os.environ, "FASTROUTE_NO_EXTENSIONS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["python", "fastroute._speedups._sse_py"]
