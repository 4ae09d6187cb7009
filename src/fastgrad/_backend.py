"""Which build of fastgrad runs: the compiled extension or pure Python.

fastgrad's hot paths are Cython extension modules (``_engine``, ``_optim``,
``_numgrad``, ``_replay``).  They are used unless

* they are not installed -- the install could not compile them (no C
  compiler, an unsupported platform such as Pyodide) or was asked not to
  (``FASTGRAD_NO_EXTENSIONS=1 pip install ...``), or
* the environment variable ``FASTGRAD_NO_EXTENSIONS`` is set to anything but
  ``""``/``"0"`` when fastgrad is first imported.

Then the public modules run on the pure-Python engine ``fastgrad.reference``
(the same engine the tests use as an oracle, not another copy), the
optimizers on ``fastgrad._optim_py`` and the finite-difference loop on
``fastgrad._numgrad_py``.  ``fastgrad.compile`` needs the compiled build and
says so.  ``fastgrad.COMPILED`` and ``fastgrad --version`` tell which build
runs.

When the extension is missing without being asked for (a failed compile),
importing fastgrad warns once (``FallbackWarning``, a UserWarning) -- pip
does not show the build's own warning; setting ``FASTGRAD_NO_EXTENSIONS=1``
states the choice and silences it.

A compiled module that exists but fails to load (a broken build, a missing
shared library) raises its ImportError: silently running a build about 50
times slower would hide the problem.
"""
import hashlib
import importlib
import json
import os
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

__all__ = ["COMPILED", "REASON", "ENV_VAR", "BUILD", "FallbackWarning",
           "StaleBuildWarning", "require_compiled", "stale_modules"]

ENV_VAR = "FASTGRAD_NO_EXTENSIONS"


def _requested_pure() -> bool:
    return os.environ.get(ENV_VAR, "").strip() not in ("", "0")


def _probe() -> Tuple[bool, Optional[str]]:
    """(compiled?, why not) for this process; decided once, at first import."""
    if _requested_pure():
        return False, f"{ENV_VAR}={os.environ[ENV_VAR]} is set"
    try:
        importlib.import_module("fastgrad._engine")
    except ModuleNotFoundError as exc:
        if exc.name != "fastgrad._engine":
            raise
        return False, ("the compiled extension fastgrad._engine is not installed "
                       "(the install could not compile it, or was asked not to)")
    return True, None


class FallbackWarning(UserWarning):
    """fastgrad runs its pure-Python build because the extension is missing."""


COMPILED, REASON = _probe()

if not COMPILED and not _requested_pure():
    warnings.warn(
        f"fastgrad is running its pure-Python build: {REASON}.  Same API, much "
        "slower, no fastgrad.compile.  Reinstall where a C compiler is "
        "available for the compiled build, or set FASTGRAD_NO_EXTENSIONS=1 to "
        "choose the pure-Python build and silence this warning.",
        FallbackWarning, stacklevel=2)

#: "compiled" or "pure-Python": the build, as ``fastgrad --version`` prints it
BUILD = "compiled" if COMPILED else "pure-Python"


def require_compiled(feature: str) -> None:
    """Raise RuntimeError naming ``feature`` when the compiled build is absent."""
    if not COMPILED:
        raise RuntimeError(
            f"{feature} needs fastgrad's compiled build, but this process runs "
            f"the pure-Python fallback ({REASON}).  Reinstall fastgrad where a C "
            f"compiler is available (or from a binary wheel) and unset {ENV_VAR}; "
            "fastgrad.COMPILED tells which build runs.")


class StaleBuildWarning(UserWarning):
    """A compiled module of a development checkout is older than its sources."""


def stale_modules(package_dir: Optional[str] = None) -> Dict[str, List[str]]:
    """The compiled modules of a development checkout built from other sources.

    A build in place (``python setup.py build_ext --inplace`` or ``pip install
    -e .``) records, in ``.build-stamp.json`` beside the modules, every file
    each module was built from (size, mtime, SHA-256).  This compares them
    with the files on disk: ``{module: [changed files]}`` for every module
    whose sources changed since it was built (empty when all are current, and
    for an installed wheel, which has no stamp).  Files whose size and mtime
    are unchanged are not read.
    """
    pkg = Path(package_dir) if package_dir else Path(__file__).resolve().parent
    try:
        stamp = json.loads((pkg / ".build-stamp.json").read_text())
    except (OSError, ValueError):
        return {}
    stale: Dict[str, List[str]] = {}
    for module, entry in sorted(stamp.items()):
        try:
            files = entry["files"]
        except (TypeError, KeyError):
            continue
        for name, (size, mtime_ns, digest) in sorted(files.items()):
            path = pkg / name
            try:
                st = path.stat()
                if st.st_size == size and st.st_mtime_ns == mtime_ns:
                    continue
                if hashlib.sha256(path.read_bytes()).hexdigest() == digest:
                    continue
            except OSError:
                pass                    # a source file removed: stale as well
            stale.setdefault(module, []).append(name)
    return stale


if COMPILED:
    _STALE = stale_modules()
    if _STALE:
        warnings.warn(
            "fastgrad's compiled modules are older than their sources in this "
            "development checkout: "
            + "; ".join(f"{m} ({', '.join(files[:3])}{' ...' if len(files) > 3 else ''} "
                        "changed)" for m, files in _STALE.items())
            + ".  Rebuild them (only these are recompiled): "
            "`python setup.py build_ext --inplace` or `pip install -e .`",
            StaleBuildWarning, stacklevel=2)
