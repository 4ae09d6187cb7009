#!/usr/bin/env bash
# Lint and type-check fastgrad: ruff (Python), the import-graph check
# (.ci/check_imports.py), cython-lint (.pyx/.pxd/.pxi), mypy --strict on the
# package and on the user script of tests/typecheck, pyright strict
# (basedpyright) on that script, and mypy's stubtest (the .pyi stubs match the
# compiled modules).
# Settings (line length 100, rule sets, mypy overrides) live in pyproject.toml.
# Works in a fresh venv after `pip install ".[test]"` (the test extra brings
# ruff, cython-lint, mypy and basedpyright); run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
run() {
    echo "== $* =="
    "$@" || status=1
}

run python -m ruff check src tests benchmarks examples docs
# the import graph: no cycle inside fastgrad, the library never imports the
# bench (ARCHITECTURE.md); standard library only
run python .ci/check_imports.py
run cython-lint src/fastgrad/*.pyx src/fastgrad/*.pxd src/fastgrad/*.pxi
# mypy reads [tool.mypy] (files = src/fastgrad, mypy_path = src); the stubs
# beside the compiled modules are what it checks them against
run python -m mypy --strict
run env MYPYPATH=src python -m mypy --strict tests/typecheck/user_script.py
# pyright's strict mode on the same script ([tool.basedpyright] in pyproject.toml):
# basedpyright is pyright with its JavaScript bundled (the npm registry that
# PyPI's `pyright` downloads from is not needed)
run basedpyright
# the hand-written stubs against the compiled modules (needs them importable:
# an installed fastgrad or an in-place build with PYTHONPATH=src)
compiled="fastgrad._engine fastgrad._higher fastgrad._numgrad fastgrad._optim fastgrad._replay fastgrad._vmath_ext"
found=""
for path in "${PYTHONPATH:-}" "src"; do
    if PYTHONPATH="$path" python -c "import ${compiled// /, }" 2>/dev/null; then
        found=yes
        break
    fi
done
if [ -n "$found" ]; then
    run env PYTHONPATH="$path" MYPYPATH=src python -m mypy.stubtest \
        --mypy-config-file pyproject.toml --allowlist .ci/stubtest-allowlist.txt \
        --ignore-unused-allowlist $compiled
else
    echo "== stubtest skipped: the compiled modules are not importable (build them first) =="
fi

if [ "$status" -ne 0 ]; then
    echo "lint: FAILED" >&2
else
    echo "lint: all clean"
fi
exit "$status"
