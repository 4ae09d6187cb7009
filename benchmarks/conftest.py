"""pytest-benchmark harness for fastgrad's workloads (``pytest benchmarks/``).

The workloads themselves live in :mod:`fastgrad.bench.workloads` (listed in
:mod:`fastgrad.bench.cases`), shared with the ``fastgrad bench`` command.  Each
``bench_*.py`` module parametrizes one workload over fastgrad and its
baselines; the ``workload`` fixture below:

* builds that side's runner (a missing baseline skips with the reason),
* runs it once and checks the result against fastgrad's on the same inputs
  (values, gradients, losses within the workload's tolerance) -- a mismatch
  fails the test before any timing,
* times it with ``benchmark.pedantic`` (one call per round, untimed setup),
  grouped per workload so fastgrad and its baselines sit side by side,
* records the median, and the terminal summary prints the ratios
  (baseline / fastgrad), per-node figures and the targets.

Sizes: ``FASTGRAD_BENCH_MODE=quick`` (default), ``full`` (more rounds,
deeper chains) or ``smoke`` (tiny, to check the suite itself); the backward
scaling series runs to 10^7 nodes except in smoke mode.
``--fastgrad-enforce-targets`` turns a missed target into a failing exit status
(off by default: the machine may be shared).
"""
import gc

import pytest

from fastgrad.bench import cases, harness

try:
    MODE = cases.bench_mode()
except ValueError as exc:
    raise pytest.UsageError(str(exc)) from None

# (workload, variant, gc) -> {"impl": median seconds or bytes, ...}; nodes
_RESULTS = {}
_NODES = {}
_FG_RESULTS = {}     # (workload, params key) -> fastgrad's checked result


def pytest_collect_file(file_path, parent):
    """Collect ``bench_*.py`` here (the default pattern is ``test_*.py``)."""
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        # (a file named on the command line is collected by pytest itself)
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_addoption(parser):
    parser.addoption("--fastgrad-enforce-targets", action="store_true",
                     help="fail the run when a ratio misses its target")


def _fastgrad_result(case, pair):
    key = (case.name, pair.key)
    if key not in _FG_RESULTS:
        runner = case.make("fastgrad", pair.params)
        try:
            if case.kind == "memory":
                _FG_RESULTS[key] = harness.measure_memory(runner)[1]
            else:
                _FG_RESULTS[key] = harness.run_once(runner)
        finally:
            if runner.close is not None:
                runner.close()
    return _FG_RESULTS[key]


def _make(case, impl, pair):
    try:
        return case.make(impl, pair.params)
    except harness.NotAvailable as exc:
        pytest.skip(str(exc))


def _check(case, impl, pair, result):
    if impl == "fastgrad":
        _FG_RESULTS.setdefault((case.name, pair.key), result)
        if pair.baseline is None and case.self_check is not None:
            msg = case.self_check(result)
            if msg:
                pytest.fail(msg)
        return
    try:
        expected = _fastgrad_result(case, pair)
    except harness.NotAvailable as exc:
        pytest.skip(f"cannot check against fastgrad: {exc}")
    try:
        harness.compare(expected, result, case.rtol, case.atol)
    except harness.Mismatch as exc:
        pytest.fail(f"fastgrad's result differs from {impl}'s: {exc}")


def _skip_on_error(case, impl):
    if case.kind != "grid":
        return None
    from fastgrad.bench import grid
    return grid._SKIP_ON_ERROR.get(impl)


@pytest.fixture
def workload(benchmark):
    """Check and time one side of a workload: ``workload(name, impl, pair, gc)``."""

    def run(case_name, impl, pair, gc_mode="on"):
        case = cases.get_case(case_name)
        runner = _make(case, impl, pair)
        rounds = pair.fg_rounds if impl == "fastgrad" else pair.rounds
        key = (case.name, pair.label, gc_mode)
        try:
            with harness.isolated_gc():
                try:
                    result = harness.run_once(runner)
                except Exception as exc:
                    # a grid peer that may fail on this machine (torch.compile)
                    # is a skip with its reason, as in `fastgrad bench`
                    reason = _skip_on_error(case, impl)
                    if reason is None:
                        raise
                    pytest.skip(f"{reason}: {harness.describe_error(exc)}")
                _check(case, impl, pair, result)
                benchmark.group = f"{case.name} {pair.label} gc={gc_mode}".replace("  ", " ")
                benchmark.extra_info["nodes"] = runner.nodes
                if gc_mode == "off":
                    gc.disable()
                try:
                    benchmark.pedantic(runner.fn, setup=runner.setup, rounds=rounds,
                                       iterations=1, warmup_rounds=0)
                finally:
                    gc.enable()
        finally:
            if runner.close is not None:
                runner.close()
        stats = getattr(benchmark, "stats", None)
        if stats is not None and getattr(stats, "stats", None) is not None:
            median = stats.stats.median
            if runner.nodes:
                benchmark.extra_info["ns_per_node"] = median / runner.nodes * 1e9
            _RESULTS.setdefault(key, {})[impl] = median
            _NODES[key] = runner.nodes
        return result

    return run


@pytest.fixture
def memory():
    """Measure one side's graph memory: ``memory(name, impl, pair)`` -> bytes."""

    def run(case_name, impl, pair):
        case = cases.get_case(case_name)
        runner = _make(case, impl, pair)
        with harness.isolated_gc():
            nbytes, result = harness.measure_memory(runner)
        _check(case, impl, pair, result)
        key = (case.name, pair.label, "-")
        _RESULTS.setdefault(key, {})[impl] = nbytes
        _NODES[key] = runner.nodes
        return nbytes

    return run


def _summary_lines():
    lines = []
    missed = []
    for (name, label, g), sides in _RESULTS.items():
        case = cases.get_case(name)
        fg = sides.get("fastgrad")
        nodes = _NODES.get((name, label, g))
        what = f"{name} {label}".strip() + (f" (gc {g})" if g != "-" else "")
        if fg is None:
            continue
        per = ""
        if nodes:
            per = (f", {fg / nodes:.0f} bytes/node" if case.kind == "memory"
                   else f", {fg / nodes * 1e9:.1f} ns/node")
        if len(sides) == 1:
            lines.append(f"{what}: fastgrad only{per}")
        for impl, t in sides.items():
            if impl == "fastgrad":
                continue
            ratio = t / fg
            target = case.targets.get(impl) if g != "off" else None   # stated with gc on
            verdict = ""
            if case.shared is not None:
                # the target is on the time net of the shared work (num_grad:
                # the calls to f), which only `fastgrad bench` subtracts
                target = None
                verdict = "  (total times; net figure: fastgrad bench --only " + name + ")"
            if target is not None:
                ok = ratio >= target[0]
                verdict = f"  target {target[1]}: {'ok' if ok else 'MISSED'}"
                if not ok:
                    missed.append(f"{what} vs {impl}")
            if case.kind == "memory":
                how = f"{ratio:.3g}x less memory than"
            elif ratio >= 1:
                how = (f"{ratio:,.0f}" if ratio >= 1000 else f"{ratio:.3g}") + "x faster than"
            else:
                how = f"{1 / ratio:.3g}x the time of"
            lines.append(f"{what}: fastgrad {how} {impl}{per}{verdict}")
    return lines, missed


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines, missed = _summary_lines()
    if not lines:
        return
    terminalreporter.section("fastgrad ratios (baseline / fastgrad, same run)")
    for line in lines:
        terminalreporter.write_line(line)
    if missed and config.getoption("--fastgrad-enforce-targets"):
        terminalreporter.write_line(f"targets missed: {', '.join(missed)}", red=True)


def pytest_sessionfinish(session, exitstatus):
    if session.config.getoption("--fastgrad-enforce-targets"):
        _, missed = _summary_lines()
        if missed and session.exitstatus == 0:
            session.exitstatus = 1
