"""``FASTROUTE_NO_EXTENSIONS`` means the same to setup.py and to the runtime: one reader
(``fastroute/_speedups/_switch.py``), the usual spellings, and a clear refusal of anything else."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from importlib.util import find_spec

import pytest

from fastroute._speedups._switch import SwitchError, no_extensions
from tests.conftest import ROOT

WITHOUT = ["1", "true", "TRUE", "yes", "On", " yes "]  # go without the compiled speedups
WITH = ["0", "false", "False", "no", "OFF", "", " 0 "]  # use them
GARBAGE = ["maybe", "2", "y", "-1", "enabled"]
COMPILED = ["fastroute._speedups._decode_c", "fastroute._speedups._keywords_c", "fastroute._speedups._rules_c",
            "fastroute._speedups._shape_c", "fastroute._speedups._sse_c"]
#: the extensions are built here (looked up, not imported)
BUILT = all((spec := find_spec(name)) is not None and str(spec.origin).endswith(tuple(EXTENSION_SUFFIXES))
            for name in COMPILED)

# setup.py run as a build would run it, with its two outside calls stood in for: what it would build
SETUP_PROBE = """
import runpy, sys, types, setuptools
setuptools.setup = lambda **kw: print("building:", sorted(e.name for e in kw["ext_modules"]))
build = types.ModuleType("Cython.Build")  # Cython is a build requirement, not installed beside fastroute
build.cythonize = lambda modules, **kw: modules
sys.modules.update({"Cython": types.ModuleType("Cython"), "Cython.Build": build})
sys.argv = ["setup.py", "build_ext"]
runpy.run_path("setup.py", run_name="__main__")
"""


def env_with(value: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FASTROUTE_NO_EXTENSIONS"}
    if value is not None:
        env["FASTROUTE_NO_EXTENSIONS"] = value
    return env


def setup_py(value: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SETUP_PROBE], cwd=ROOT, env=env_with(value), capture_output=True,
                          text=True, timeout=60)


def runtime(value: str | None) -> subprocess.CompletedProcess[str]:
    code = "import fastroute._speedups as s; print(s.NO_EXTENSIONS, s.implementation())"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env_with(value), capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("value", WITHOUT)
def test_yes_spellings(value: str) -> None:
    assert no_extensions({"FASTROUTE_NO_EXTENSIONS": value}) is True


@pytest.mark.parametrize("value", WITH)
def test_no_spellings(value: str) -> None:
    assert no_extensions({"FASTROUTE_NO_EXTENSIONS": value}) is False
    assert no_extensions({}) is False  # unset


@pytest.mark.parametrize("value", GARBAGE)
def test_anything_else_is_refused(value: str) -> None:
    with pytest.raises(SwitchError, match=f"'{value}' is neither yes nor no: set it to 1, true, yes or on"):
        no_extensions({"FASTROUTE_NO_EXTENSIONS": value})


@pytest.mark.parametrize("value", [None, "0", "false", "off", "1", "true", "yes"])
def test_setup_py_and_runtime_agree(value: str | None) -> None:
    without = value in WITHOUT
    built = setup_py(value)
    assert built.returncode == 0, built.stderr
    assert f"building: {[] if without else COMPILED}" in built.stdout
    assert ("building without Cython speedups" in built.stderr) == without
    live = runtime(value)
    assert live.returncode == 0, live.stderr
    flag, implementation = live.stdout.split()
    assert flag == str(without)
    assert implementation == ("compiled" if BUILT and not without else "python")


@pytest.mark.parametrize("value", ["maybe", "2"])
def test_both_readers_refuse_garbage(value: str) -> None:
    built = setup_py(value)
    assert built.returncode != 0 and "building:" not in built.stdout
    assert f"error: FASTROUTE_NO_EXTENSIONS: '{value}' is neither yes nor no" in built.stderr
    live = runtime(value)
    assert live.returncode != 0
    assert f"FASTROUTE_NO_EXTENSIONS: '{value}' is neither yes nor no" in live.stderr
    served = subprocess.run([sys.executable, "-m", "fastroute", "serve", "--port", "1"], cwd=ROOT,
                            env=env_with(value), capture_output=True, text=True, timeout=60)
    assert served.returncode == 2
    assert served.stderr.startswith("fastroute: config error: environment: FASTROUTE_NO_EXTENSIONS: "
                                    f"'{value}' is neither yes nor no")
