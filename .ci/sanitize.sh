#!/usr/bin/env bash
# CI memory-safety job: build fastgrad's extensions with AddressSanitizer +
# UndefinedBehaviorSanitizer (FASTGRAD_SANITIZE=1, see setup.py) and run the
# test suite -- including the hypothesis fuzz of the public compiled API
# (tests/test_fuzz_compiled_api.py) -- against that build.  Any sanitizer
# report fails the job.
#
# The build happens in a copy of the checkout (the in-place build of the other
# CI steps is left alone) with a venv that sees the interpreter's packages.
#
# Runtime options:
#   * CPython is not instrumented, so gcc's ASan runtime is LD_PRELOADed (it
#     must come first in the library list), with libstdc++: otherwise ASan
#     finds no __cxa_throw to intercept and aborts at the first C++ exception
#     of a test dependency (matplotlib's ft2font);
#   * detect_leaks=0: LeakSanitizer reports CPython's interned strings,
#     type caches and arenas that are deliberately never freed at exit --
#     noise, not fastgrad bugs (leaks of Values are tested by the suite with
#     weakrefs and tracemalloc instead);
#   * allocator_may_return_null=1: a huge allocation (the fuzz tests ask for
#     terabytes) fails as in glibc, so numpy raises MemoryError -- the
#     behaviour under test -- instead of ASan aborting;
#   * abort_on_error=1 / halt_on_error=1 + -fno-sanitize-recover=undefined:
#     the first report kills the process (pytest fails), and log_path keeps the
#     report even when it came from a subprocess whose exit status a test
#     tolerated: any file there fails the job.
#
# Usage: .ci/sanitize.sh [extra pytest args]   (FASTGRAD_SANITIZE_KEEP=1 keeps
# the build directory).  About 6 minutes for the whole suite on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)

work=$(mktemp -d "${TMPDIR:-/tmp}/fastgrad-sanitize.XXXXXX")
cleanup() { if [ "${FASTGRAD_SANITIZE_KEEP:-0}" = 0 ]; then rm -rf "$work"; fi; }
trap cleanup EXIT

# a clean copy: sources, tests, examples, docs; no generated files.  In a git
# checkout, the files git tracks or would track (.gitignore keeps out the
# builds, venvs, caches and .ci-work, which other CI jobs may be writing
# meanwhile); elsewhere (an unpacked sdist), everything but generated files.
if git -C "$here" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$here" && git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
        | tar --null -T - -cf -) | tar -C "$work" -xf -
else
    tar -C "$here" --exclude=.git --exclude=.venv --exclude=build --exclude='*.so' \
        --exclude='*.c' --exclude='*.egg-info' --exclude=.pytest_cache \
        --exclude=.hypothesis --exclude=.ci-work --exclude=__pycache__ \
        --exclude=docs/_build -cf - . | tar -C "$work" -xf -
fi

# build requirements into the current environment (CI: .ci/run's venv, which
# has the test extra installed); the copy is tested through PYTHONPATH
python -m pip install -q "Cython>=3.0,<4" "setuptools>=77"

echo "== sanitizer build (FASTGRAD_SANITIZE=1) =="
(cd "$work" && FASTGRAD_SANITIZE=1 FASTGRAD_REQUIRE_EXTENSIONS=1 FASTGRAD_CYTHON_FORCE=1 \
    python setup.py -q build_ext --inplace -j 2 >"$work/build.log" 2>&1) \
    || { tail -50 "$work/build.log"; exit 1; }
for so in "$work"/src/fastgrad/_*.so; do
    deps=$(ldd "$so")           # (not piped into grep -q: SIGPIPE + pipefail)
    if [[ "$deps" != *libasan* ]]; then
        echo "sanitize: $so is not linked against libasan" >&2
        exit 1
    fi
done

asan=$(gcc -print-file-name=libasan.so)
stdcxx=$(gcc -print-file-name=libstdc++.so)
for lib in "$asan" "$stdcxx"; do
    if [ ! -e "$lib" ]; then
        echo "sanitize: gcc's $(basename "$lib") not found ($lib)" >&2
        exit 1
    fi
done
logs="$work/sanitizer-logs"
mkdir -p "$logs"

echo "== test suite under ASan + UBSan =="
set +e
(cd "$work" && \
    LD_PRELOAD="$asan $stdcxx" \
    ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1:log_path=$logs/asan" \
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$logs/ubsan" \
    PYTHONPATH=src python -m pytest -q -p no:cacheprovider "$@")
status=$?
set -e

# error reports (ASan "ERROR: AddressSanitizer", UBSan "runtime error") fail
# the job; ASan's warnings (a refused huge allocation) are only shown
reports=0
for f in "$logs"/*; do
    [ -e "$f" ] || continue
    if grep -qE "ERROR: (Address|Undefined|Leak)Sanitizer|runtime error:|SUMMARY: " "$f"; then
        echo "--- sanitizer report $f" >&2
        cat "$f" >&2
        reports=$((reports + 1))
    else
        echo "--- sanitizer warnings $f (not errors):"
        sort "$f" | uniq -c | head -5
    fi
done
if [ "$reports" -ne 0 ]; then
    echo "sanitize: $reports sanitizer report(s)" >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "sanitize: the test suite failed under the sanitizer build (exit $status)" >&2
    exit "$status"
fi
echo "sanitize: no sanitizer report; suite passed"
