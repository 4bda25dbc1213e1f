"""Build the optional Cython speedups in ``fastroute/_speedups``.

Every compiled module has a pure-Python twin of identical behaviour, so the
build never fails for want of a compiler: it prints a warning and installs the
Python version.  ``FASTROUTE_NO_EXTENSIONS=1`` (or true, yes, on) skips the extensions
entirely; the runtime obeys the same switch, read by the same function: this file loads
``fastroute/_speedups/_switch.py`` by its path, as the package cannot be imported before
it is built.
"""

import importlib.util
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _load_switch():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fastroute", "_speedups", "_switch.py")
    spec = importlib.util.spec_from_file_location("_fastroute_switch", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ValueError as exc:  # neither yes nor no: refuse to guess which build was meant
        raise SystemExit(f"error: {module.VARIABLE}: {exc}") from None
    return module


_SWITCH = _load_switch()
NO_EXTENSIONS = _SWITCH.NO_EXTENSIONS

# One entry per hot path: module name -> .pyx source.
SPEEDUPS = {
    "fastroute._speedups._sse_c": "fastroute/_speedups/_sse_c.pyx",
    # one source for both: _decode_c.py is a link to _decode_py.py (Cython pure-Python mode)
    "fastroute._speedups._decode_c": "fastroute/_speedups/_decode_c.py",
    # the same for request shapes: _shape_c.py is a link to _shape_py.py
    "fastroute._speedups._shape_c": "fastroute/_speedups/_shape_c.py",
    "fastroute._speedups._rules_c": "fastroute/_speedups/_rules_c.pyx",
    "fastroute._speedups._keywords_c": "fastroute/_speedups/_keywords_c.pyx",
}


class OptionalBuildExt(build_ext):
    """build_ext that degrades to pure Python when compiling fails."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers, no Cython
            self._warn(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._warn(exc, ext.name)

    @staticmethod
    def _warn(exc, name="the speedups"):
        bar = "*" * 75
        print(
            f"\n{bar}\nWARNING: could not compile {name} ({type(exc).__name__}: {exc}).\n"
            "fastroute will use its pure-Python implementation: it works the same,\n"
            f"only slower on the hot paths.\n{bar}\n",
            file=sys.stderr,
        )


def extensions():
    if NO_EXTENSIONS:
        print(f"{_SWITCH.VARIABLE}={os.environ.get(_SWITCH.VARIABLE)}: building without Cython speedups.",
              file=sys.stderr)
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        OptionalBuildExt._warn(ImportError("Cython is not installed"))
        return []
    modules = [Extension(name, [src]) for name, src in SPEEDUPS.items()]
    try:
        return cythonize(modules, language_level=3,
                         compiler_directives={"boundscheck": False, "wraparound": False,
                                              # type hints stay hints: the Python twin must behave the same
                                              "annotation_typing": False})
    except Exception as exc:  # Cython itself failed: install the Python versions
        OptionalBuildExt._warn(exc)
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
