"""Build fastgrad's compiled modules (every src/fastgrad/_*.pyx).

One set of Cython directives for all modules.  Environment switches:

FASTGRAD_CYTHON_DEBUG=1
    Debug build: bounds, wraparound-free indexing and memoryview
    initialisation are checked again, and the C code is built without
    optimisation and with asserts.
FASTGRAD_NO_EXTENSIONS=1
    Build nothing: install the pure-Python build (fastgrad.reference's
    engine behind the same API; see fastgrad/_backend.py).
FASTGRAD_SANITIZE=1
    AddressSanitizer + UndefinedBehaviorSanitizer build (gcc/clang; see below).
FASTGRAD_REQUIRE_EXTENSIONS=1
    A failed compile is an error (wheel builds, CI).  Without it, a failed
    compile (no C compiler, no Cython, an unsupported platform) prints a
    warning and installs the pure-Python build.

The modules are cythonized and compiled in parallel (one job per CPU).
"""
import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

import setuptools
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# pyproject.toml's license fields (PEP 639) need setuptools 77; older ones fail
# deep inside setup() with a message about the metadata, so say it here.  A
# fresh venv has an old setuptools (3.9-3.11) or none (3.12+):
#   python -m pip install "setuptools>=77" "Cython>=3,<4"
if int(setuptools.__version__.split(".")[0]) < 77:
    sys.exit(f"fastgrad's setup.py needs setuptools >= 77 (this is {setuptools.__version__}): "
             'python -m pip install "setuptools>=77" "Cython>=3,<4"')


def _flag(name):
    return os.environ.get(name, "").strip() not in ("", "0")


DEBUG = _flag("FASTGRAD_CYTHON_DEBUG")
NO_EXTENSIONS = _flag("FASTGRAD_NO_EXTENSIONS")
REQUIRE_EXTENSIONS = _flag("FASTGRAD_REQUIRE_EXTENSIONS")
JOBS = os.cpu_count() or 1

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

# Compiler flags per compiler family (build_ext knows the compiler only once
# it runs, so they are set in FastgradBuildExt.build_extensions).
#
# No fused multiply-add contraction anywhere: results must not depend on the
# target (x86-64 with -march=native, ARM, Apple clang whose default is
# -ffp-contract=on) so that fastgrad, its pure-Python reference and
# micrograd's loops agree to the last bit.
#   gcc/clang: -ffp-contract=off.
#   MSVC: /fp:precise (the default model, named so that a global /fp:fast
#   cannot leak in).  Under /fp:precise, MSVC 2022 (17.0+) does not contract
#   a*b+c into an FMA unless /fp:contract is also given; MSVC 2019 and older
#   could contract under /fp:precise when targeting FMA-capable /arch
#   (AVX2), which the default x64 /arch:SSE2 build never does.  We pass
#   neither /fp:contract nor /arch.
# Optimisation: -O3 lets gcc vectorise the replay's batch loops (gcc 12,
# demo step through the compiled replay: 57 us at -O2 -> 36 us at -O3, CPU
# time, min of 5; the eager step is unchanged at ~4.8 ms), for 24 -> 29 s of
# compile CPU time for the four modules.  MSVC's highest level is /O2.  No
# -ffast-math / /fp:fast: the engine relies on IEEE inf/nan semantics.
# -g0: Python's own CFLAGS add -g; debug info made compiling _replay.c 47%
# slower (19.0 -> 27.8 s CPU) and its object file 8x larger (1.1 -> 8.6 MB)
# for a release build whose wheels are stripped anyway (the debug build
# keeps -g).
FLAGS = {
    "unix": {
        "release": ["-O3", "-g0", "-ffp-contract=off"],
        "debug": ["-O0", "-g", "-UNDEBUG", "-ffp-contract=off"],
    },
    "msvc": {
        "release": ["/O2", "/fp:precise"],
        "debug": ["/Od", "/Zi", "/UNDEBUG", "/fp:precise"],
    },
}
FLAGS["mingw32"] = FLAGS["cygwin"] = FLAGS["unix"]

# FASTGRAD_SANITIZE=1: AddressSanitizer + UndefinedBehaviorSanitizer build (gcc or
# clang), for CI's memory-safety job (.ci/sanitize.sh).  Combines with either
# mode above (-O1 replaces their -O level).  Python is not instrumented, so the
# tests run with the sanitizer runtime preloaded:
#   LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 ...
SANITIZE = _flag("FASTGRAD_SANITIZE")
_SAN = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
SANITIZE_CFLAGS = _SAN + ["-fno-omit-frame-pointer", "-g", "-O1"]
SANITIZE_LDFLAGS = _SAN

here = Path(__file__).parent


def _warn(message):
    bar = "*" * 76
    print(f"\n{bar}\nWARNING (fastgrad): {message}\n{bar}\n", file=sys.stderr, flush=True)


def _extensions():
    """One Extension per src/fastgrad/_*.pyx, or [] for the pure-Python build.

    Their sources stay .pyx here (so that the sdist carries the .pyx and no
    generated C); build_ext cythonizes them when it runs.
    """
    if NO_EXTENSIONS:
        _warn("FASTGRAD_NO_EXTENSIONS is set: installing the pure-Python build "
              "(much slower; fastgrad.COMPILED will be False).")
        return []
    return [
        Extension(
            f"fastgrad.{pyx.stem}",
            [str(pyx.relative_to(here).as_posix())],
            define_macros=[("FASTGRAD_DEBUG", "1" if DEBUG else "0")],
            # the C headers (kernels, vector maths): an edit rebuilds
            depends=[str(h.relative_to(here).as_posix())
                     for h in sorted((here / "src" / "fastgrad").glob("*.h"))],
        )
        for pyx in sorted((here / "src" / "fastgrad").glob("_*.pyx"))
    ]


def _module_files(pyx):
    """The files of src/fastgrad a compiled module is built from: its .pyx, the
    .pxd/.pxi it cimports or includes (Cython's dependency tree) and the C
    headers they name (``cdef extern from "x.h"``, ``#include "x.h"``)."""
    from Cython.Build.Dependencies import create_dependency_tree
    pkg = (here / "src" / "fastgrad").resolve()
    files = {Path(p).resolve() for p in create_dependency_tree(None, quiet=True)
             .all_dependencies(str(pyx))}
    files = {p for p in files if p.parent == pkg}
    todo = list(files)
    while todo:
        text = todo.pop().read_text(errors="replace")
        for name in re.findall(r'"([\w.]+\.h)"', text):
            header = pkg / name
            if header.exists() and header not in files:
                files.add(header)
                todo.append(header)
    return sorted(files)


# Build stamp (development checkouts only): for every module built in place
# (`build_ext --inplace`, `pip install -e .`), the size, mtime and SHA-256 of
# each file it was built from, in src/fastgrad/.build-stamp.json (git-ignored).
# `import fastgrad` compares them with the files on disk and warns
# (fastgrad._backend.StaleBuildWarning) when a module is older than its sources,
# instead of silently running the old code.
STAMP = here / "src" / "fastgrad" / ".build-stamp.json"
_STAMP_LOCK = threading.Lock()


def _file_record(path):
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()]


def _write_stamp(ext, so_path, mode):
    pkg = STAMP.parent
    entry = {"so": Path(so_path).name, "mode": mode,
             "files": {str(p.relative_to(pkg)): _file_record(p) for p in ext.fastgrad_files}}
    with _STAMP_LOCK:
        try:
            stamp = json.loads(STAMP.read_text())
        except (OSError, ValueError):
            stamp = {}
        stamp[ext.name.rsplit(".", 1)[-1]] = entry
        tmp = STAMP.with_suffix(".tmp")
        tmp.write_text(json.dumps(stamp, indent=1, sort_keys=True))
        os.replace(tmp, STAMP)


def _build_mode():
    return ("debug" if DEBUG else "release") + ("+sanitize" if SANITIZE else "")


def _cythonize(extensions):
    from Cython.Build import cythonize
    # Cython skips a .pyx whose .c is newer; after switching between the debug
    # and the normal build that .c has the wrong directives, so remember the mode.
    stamp = here / "build" / "fastgrad-build-mode"
    mode = _build_mode()
    mode_changed = not stamp.exists() or stamp.read_text() != mode
    stamp.parent.mkdir(exist_ok=True)
    stamp.write_text(mode)
    t0 = time.perf_counter()
    generated = cythonize(
        extensions,
        compiler_directives=DIRECTIVES,
        include_path=["src"],
        nthreads=JOBS if JOBS > 1 else 0,
        # a debug build must not reuse optimised C files, and vice versa
        force=mode_changed or _flag("FASTGRAD_CYTHON_FORCE"),
    )
    print(f"fastgrad: cythonize took {time.perf_counter() - t0:.1f} s", flush=True)
    # keep setuptools' Extension objects (cythonize returns distutils ones);
    # only their sources change, .pyx -> .c
    by_name = {ext.name: ext for ext in generated}
    for ext in extensions:
        pyx = here / ext.sources[0]
        ext.sources = by_name[ext.name].sources
        # a module is recompiled when any file it is built from changes: Cython
        # regenerates the .c for .pyx/.pxd/.pxi edits, ``depends`` covers headers
        ext.fastgrad_files = _module_files(pyx)
        ext.depends = [str(p) for p in ext.fastgrad_files]


class FastgradBuildExt(build_ext):
    """build_ext with per-compiler flags, parallel jobs and a pure-Python fallback."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:          # `-j` not given: one job per CPU
            self.parallel = JOBS

    def run(self):
        if not self.extensions:
            return
        # in place: `setup.py build_ext --inplace` or `pip install -e .` (a
        # development checkout); setuptools clears self.inplace while building
        self._fastgrad_inplace = bool(self.inplace or getattr(self, "editable_mode", False))
        try:
            _cythonize(self.extensions)
        except Exception as exc:  # Cython missing (no build isolation), a .pyx error
            self._fall_back(exc)
            return
        try:
            super().run()
        except Exception as exc:  # no compiler at all: DistutilsPlatformError, ...
            self._fall_back(exc)

    def _inplace_file(self, ext):
        build_py = self.get_finalized_command("build_py")
        return self._get_inplace_equivalent(build_py, ext)[0]

    def build_extension(self, ext):
        # An editable install (`pip install -e .`) builds into a fresh temporary
        # directory every time, so distutils would recompile every module after
        # a one-line edit (69 s to 8 min here).  A module whose in-place copy is
        # newer than everything it is built from is reused instead.
        target = self.get_ext_fullpath(ext.name)
        inplace = self._inplace_file(ext) if self._fastgrad_inplace else None
        if inplace and not self.force and os.path.exists(inplace) \
                and os.path.abspath(inplace) != os.path.abspath(target):
            newest = max(os.path.getmtime(f) for f in list(ext.sources) + list(ext.depends))
            if os.path.getmtime(inplace) >= newest:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(inplace, target)
                print(f"fastgrad: {ext.name} is up to date (not recompiled)", flush=True)
                self._fastgrad_reused.append(ext.name)
                return
        super().build_extension(ext)

    def copy_extensions_to_source(self):
        if self.extensions:                  # nothing to copy after a fallback
            super().copy_extensions_to_source()
            for ext in self.extensions:
                _write_stamp(ext, self._inplace_file(ext), _build_mode())

    def build_extensions(self):
        family = FLAGS.get(self.compiler.compiler_type, FLAGS["unix"])
        for ext in self.extensions:
            ext.extra_compile_args = list(family["debug" if DEBUG else "release"])
            if SANITIZE:
                if self.compiler.compiler_type == "msvc":
                    raise RuntimeError("FASTGRAD_SANITIZE=1 needs gcc or clang")
                ext.extra_compile_args += SANITIZE_CFLAGS
                ext.extra_link_args = list(SANITIZE_LDFLAGS)
        t0 = time.perf_counter()
        self._fastgrad_reused = []
        try:
            super().build_extensions()
        except Exception as exc:  # CompileError, LinkError, a missing compiler
            self._fall_back(exc)
            return
        n = len(self.extensions) - len(self._fastgrad_reused)
        print(f"fastgrad: compiled {n} of {len(self.extensions)} modules in "
              f"{time.perf_counter() - t0:.1f} s ({self.parallel} jobs, "
              f"{self.compiler.compiler_type} compiler)", flush=True)

    def _fall_back(self, exc):
        if REQUIRE_EXTENSIONS:
            raise exc
        if getattr(self, "_fastgrad_failed", False):
            raise exc                        # reported already (build_extensions)
        if getattr(self, "_fastgrad_inplace", False):
            # a development build that fails must fail: falling back would
            # exit 0 and leave the old modules in place
            self._fastgrad_failed = True
            _warn(f"building fastgrad's extension modules failed: {type(exc).__name__}: "
                  f"{str(exc).strip()[:500]}")
            raise exc
        # never install a part of the compiled build: remove what was built
        for ext in self.extensions:
            path = self.get_ext_fullpath(ext.name)
            if os.path.exists(path):
                os.remove(path)
        self.extensions[:] = []
        _warn(f"compiling fastgrad's extension modules failed ({type(exc).__name__}: "
              f"{str(exc).strip()[:300]}).  Installing the pure-Python build "
              "instead: same API, much slower; fastgrad.COMPILED is False "
              "and fastgrad.compile is unavailable.  For the compiled build, "
              "fix the cause above (no C compiler: install gcc, clang or MSVC; "
              "no Cython: install \"Cython>=3,<4\" or keep pip's build isolation) "
              "and reinstall with `pip install --no-cache-dir --force-reinstall fastgrad`.")


setup(
    ext_modules=_extensions(),
    cmdclass={"build_ext": FastgradBuildExt},
)
