#!/usr/bin/env bash
# Lint and type-check fastgrad: ruff (Python), cython-lint (.pyx/.pxd) and
# mypy --strict on the package and on the user script of tests/typing.
# Settings (line length 100, rule sets, mypy overrides) live in pyproject.toml.
# Works in a fresh venv after `pip install ".[test]"` (the test extra brings
# ruff, cython-lint and mypy); run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
run() {
    echo "== $* =="
    "$@" || status=1
}

run python -m ruff check src tests benchmarks examples
run cython-lint src/fastgrad/*.pyx src/fastgrad/*.pxd
# mypy reads [tool.mypy] (files = src/fastgrad, mypy_path = src); the stubs
# beside the compiled modules are what it checks them against
run python -m mypy --strict
run env MYPYPATH=src python -m mypy --strict tests/typing/user_script.py

if [ "$status" -ne 0 ]; then
    echo "lint: FAILED" >&2
else
    echo "lint: all clean"
fi
exit "$status"
