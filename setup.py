"""Build fastgrad's compiled modules (every src/fastgrad/_*.pyx).

One set of Cython directives for all modules.  FASTGRAD_CYTHON_DEBUG=1 gives a
debug build: bounds, wraparound-free indexing and memoryview initialisation are
checked again, and the C code is built without optimisation and with asserts.
"""
import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTGRAD_CYTHON_DEBUG", "0") not in ("", "0")

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "initializedcheck": DEBUG,
    "wraparound": False,
    "cdivision": True,          # divisions by zero are checked explicitly
    "embedsignature": True,
    # methods as C method descriptors: they type-check ``self`` (cyfunction
    # methods do not, so Value.backward(3.0) would read a float as a Value)
    "binding": False,
}

if DEBUG:
    CFLAGS = ["-O0", "-g", "-UNDEBUG"]
else:
    # -O3 lets gcc vectorise the replay's batch loops; no -ffast-math: the
    # engine relies on IEEE inf/nan semantics.
    CFLAGS = ["-O3"]
# No fused multiply-add contraction: results must not depend on the target
# (x86-64 with -march=native, ARM) so that fastgrad, its pure-Python reference
# and micrograd's loops agree to the last bit.
CFLAGS.append("-ffp-contract=off")

# FASTGRAD_SANITIZE=1: AddressSanitizer + UndefinedBehaviorSanitizer build (gcc or
# clang), for CI's memory-safety job (.ci/sanitize.sh).  Combines with either
# mode above (-O1 replaces their -O level).  Python is not instrumented, so the
# tests run with the sanitizer runtime preloaded:
#   LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 ...
SANITIZE = os.environ.get("FASTGRAD_SANITIZE", "0") not in ("", "0")
LDFLAGS = []
if SANITIZE:
    _SAN = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
    CFLAGS += _SAN + ["-fno-omit-frame-pointer", "-g", "-O1"]
    LDFLAGS += _SAN

here = Path(__file__).parent

# Cython skips a .pyx whose .c is newer; after switching between the debug and
# the normal build that .c has the wrong directives, so remember the mode.
_stamp = here / "build" / "fastgrad-build-mode"
_mode = ("debug" if DEBUG else "release") + ("+sanitize" if SANITIZE else "")
_mode_changed = not _stamp.exists() or _stamp.read_text() != _mode
_stamp.parent.mkdir(exist_ok=True)
_stamp.write_text(_mode)
extensions = [
    Extension(
        f"fastgrad.{pyx.stem}",
        [str(pyx.relative_to(here))],
        extra_compile_args=CFLAGS,
        extra_link_args=LDFLAGS,
        define_macros=[("FASTGRAD_DEBUG", "1" if DEBUG else "0")],
    )
    for pyx in sorted((here / "src" / "fastgrad").glob("_*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=DIRECTIVES,
        include_path=["src"],
        # a debug build must not reuse optimised C files, and vice versa
        force=_mode_changed or os.environ.get("FASTGRAD_CYTHON_FORCE", "0") != "0",
    ),
)
