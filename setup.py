"""Build the one compiled module, ``tempo._core``.

Environment switches (msgspec-style), all off by default:

- ``TEMPO_DEBUG=1``: ``-O0 -g`` and the core's internal consistency checks.
- ``TEMPO_SANITIZE=1``: AddressSanitizer + UndefinedBehaviorSanitizer.
- ``TEMPO_TSAN=1``: ThreadSanitizer (``make test-tsan``, with a CPython that
  is built with it too: TSan sees races only in code it instruments).
- ``TEMPO_ANNOTATE=1``: write Cython's HTML annotation next to the source.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("TEMPO_DEBUG") == "1"
sanitize = os.environ.get("TEMPO_SANITIZE") == "1"
tsan = os.environ.get("TEMPO_TSAN") == "1"

extra_compile_args = ["-O0", "-g3"] if debug else ["-O3"]
extra_link_args = []
if sanitize:
    flags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    extra_compile_args += flags
    extra_link_args += flags
if tsan:
    # -O1 -g: TSan's reports name the lines; -O3's inlining blurs them.
    flags = ["-fsanitize=thread", "-O1", "-g", "-fno-omit-frame-pointer"]
    extra_compile_args += flags
    extra_link_args += flags

extension = Extension(
    "tempo._core",
    ["tempo/_core.pyx"],
    extra_compile_args=extra_compile_args,
    extra_link_args=extra_link_args,
    define_macros=[("TEMPO_DEBUG", "1")] if debug else [],
)

setup(
    ext_modules=cythonize(
        [extension],
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
        annotate=os.environ.get("TEMPO_ANNOTATE") == "1",
    )
)
