"""The bench's CPU-time statistic on a loaded machine (issue 26): rounds
preempted by the scheduler are left out of a side's figure when enough
rounds ran uninterrupted, and a side short of such rounds gets more.

Fake clocks throughout: the rounds' times and context switches are scripted,
nothing here depends on the machine's speed or load.
"""
import itertools

import pytest

from fastgrad.bench import harness, report

T = harness.Times


def _times(cpu, switches):
    return T(wall=list(cpu), cpu=list(cpu), switches=list(switches))


def test_figure_is_the_median_of_unpreempted_rounds_when_enough():
    # 1 ms rounds; the preempted ones came back with cold caches (3 ms)
    t = _times([1.0, 3.0, 1.1, 3.0, 0.9, 3.0, 1.0, 3.0, 1.2, 3.0],
               [0, 2, 0, 1, 0, 5, 0, 1, 0, 3])
    assert t.preempted == 5 and t.clean_only
    assert t.cpu_s == pytest.approx(1.0)          # median of 0.9, 1.0, 1.0, 1.1, 1.2
    assert t.median_cpu == pytest.approx(2.1)     # every round: (1.2 + 3.0) / 2
    assert t.cpu_rounds == [1.0, 1.1, 0.9, 1.0, 1.2]


def test_too_few_unpreempted_rounds_fall_back_to_every_round():
    # a long call (micrograd's 55 ms) is cut in every round under load: no
    # selection is possible, the figure is the plain median
    t = _times([60.0, 66.0, 70.0], [12, 14, 15])
    assert not t.clean_only and t.cpu_s == 66.0
    # four clean rounds are not enough (MIN_CLEAN = 5) ...
    t = _times([1.0] * 4 + [5.0] * 5, [0] * 4 + [1] * 5)
    assert not t.clean_only and t.cpu_s == 5.0
    # ... five are
    t.add(1.0, 1.0, 0)
    assert t.clean_only and t.cpu_s == 1.0


def test_unknown_switch_counts_use_every_round():
    # where getrusage does not exist (-1 per round) nothing is left out
    t = _times([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [-1] * 6)
    assert t.preempted == 0 and not t.clean_only and t.cpu_s == 3.5


def test_idle_rounds_give_the_same_figure_as_before():
    # no round preempted: the figure is exactly the old median over every round
    cpu = [1.3, 0.9, 1.1, 1.0, 1.2, 0.95, 1.05]
    t = _times(cpu, [0] * 7)
    assert t.cpu_s == t.median_cpu == 1.05


class _Script:
    """A fake ``harness._call``: each runner's rounds come from its script
    (an iterator of (cpu, switches)), cycling."""

    def __init__(self, scripts):
        self.scripts = {id(r): itertools.cycle(s) for r, s in scripts}
        self.calls = {k: 0 for k in self.scripts}

    def __call__(self, runner):
        self.calls[id(runner)] += 1
        cpu, n = next(self.scripts[id(runner)])
        return cpu, cpu, n


def _pair(monkeypatch, fast_script, base_script, fast_rounds=21, base_rounds=3):
    fast, base = harness.Runner(lambda: None), harness.Runner(lambda: None)
    script = _Script([(fast, fast_script), (base, base_script)])
    monkeypatch.setattr(harness, "_call", script)
    ft, bt = harness.time_pair(fast, base, fast_rounds, base_rounds, warm_s=0.0)
    return ft, bt, script


def test_time_pair_leaves_preempted_rounds_out(monkeypatch):
    # fastgrad: every other round preempted and inflated 2.5x; the baseline's
    # long rounds are all preempted (its figure is the median of all)
    ft, bt, _ = _pair(monkeypatch, [(1e-3, 0), (2.5e-3, 1)], [(55e-3, 12), (60e-3, 14)])
    assert ft.clean_only and ft.cpu_s == pytest.approx(1e-3)
    assert not bt.clean_only and bt.cpu_s == pytest.approx(55e-3)
    assert ft.median_cpu > 1e-3          # what the old statistic would have said


def test_time_pair_takes_more_rounds_when_too_few_are_clean(monkeypatch):
    # 1 round in 4 uninterrupted: 21 planned rounds give ~5 clean ones, fewer
    # than half the plan; more blocks are run until 11 are clean
    ft, _, script = _pair(monkeypatch, [(2e-3, 1), (2e-3, 3), (1e-3, 0), (2e-3, 1)],
                          [(50e-3, 0)])
    clean = len(ft.clean_cpu)
    assert clean >= 11 and len(ft) > 21 and len(ft) <= harness.MAX_EXTRA * 21
    assert ft.cpu_s == pytest.approx(1e-3)


def test_time_pair_extra_rounds_are_bounded(monkeypatch):
    # 1 round in 15 uninterrupted: the side stops at MAX_EXTRA x its planned
    # rounds, short of 11 clean ones but with enough (>= 5) for the figure
    ft, _, _ = _pair(monkeypatch, [(1e-3, 0)] + [(2e-3, 1)] * 14, [(50e-3, 0)])
    assert harness.MAX_EXTRA * 21 <= len(ft) < harness.MAX_EXTRA * 21 + 21 // 3
    assert T.MIN_CLEAN <= len(ft.clean_cpu) < 11
    assert ft.clean_only and ft.cpu_s == pytest.approx(1e-3)
    # none uninterrupted among the planned rounds: nothing to select, no
    # extra rounds, the median of every round
    ft, _, _ = _pair(monkeypatch, [(2e-3, 1)], [(50e-3, 0)])
    assert len(ft) == 21 and not ft.clean_only and ft.cpu_s == pytest.approx(2e-3)


def test_time_pair_does_not_add_rounds_of_long_calls(monkeypatch):
    # a 0.45 s call (build vs micrograd) with one clean round in three: more
    # rounds would cost seconds for a small effect; the plan stands
    ft, bt, _ = _pair(monkeypatch, [(1e-3, 0)], [(0.45, 0), (0.5, 2), (0.5, 1)],
                      base_rounds=3)
    assert len(bt) == 3 and bt.cpu_s == 0.5
    assert harness.SHORT_CALL_S <= 0.05


def test_time_pair_adds_nothing_on_an_idle_machine(monkeypatch):
    # no preemption anywhere: exactly the planned rounds, and a side that is
    # never uninterrupted is not re-run either (more rounds would not help)
    ft, bt, script = _pair(monkeypatch, [(1e-3, 0)], [(55e-3, 0)])
    assert (len(ft), len(bt)) == (21, 3)
    ft, bt, script = _pair(monkeypatch, [(1e-3, 0)], [(55e-3, 9)])
    assert (len(ft), len(bt)) == (21, 3)


def test_net_of_shared_uses_the_unpreempted_rounds():
    # num_grad's figure net of the calls to f: preempted rounds (inflated)
    # would otherwise make a 1.0 s difference look like 1.5 s
    total = _times([2.0] * 6 + [3.5] * 5, [0] * 6 + [1] * 5)
    shared = _times([1.0] * 6, [0] * 6)
    assert harness.net_of_shared(total, shared) == pytest.approx(1.0)


def test_context_switches_counts_up():
    n = harness.context_switches()
    assert n == -1 or n >= 0
    if n >= 0:
        import time
        time.sleep(0.001)                # a voluntary switch
        assert harness.context_switches() > n


def _row(**kw):
    row = {"kind": "time", "status": "ok", "fastgrad_rounds": 21, "rounds": 3,
           "fastgrad_preempted": 0, "baseline_preempted": 0}
    row.update(kw)
    return row


def test_footer_reports_preempted_rounds_and_warns_above_the_cpus():
    rows = [_row(fastgrad_preempted=7, baseline_preempted=3), _row(),
            {"kind": "memory", "status": "ok"}]
    info = {"cpus": 2, "load_average": [6.5, 4.0, 2.0]}
    text = report.format_footer([7.0, 5.0, 3.0], rows, info)
    assert "10 of 48 (21%)" in text
    assert "WARNING: the load average (7.00) exceeded the 2 logical CPUs" in text
    assert text.splitlines()[-1].endswith("7.00 5.00 3.00")
    quiet = report.format_footer([0.5, 0.4, 0.3], [_row()],
                                 {"cpus": 2, "load_average": [0.2, 0.2, 0.2]})
    assert "WARNING" not in quiet and "0 of 24 (0%)" in quiet
    # the old call (no rows) still gives the load line alone
    assert report.format_footer([1.0, 2.0, 3.0]) == \
        "load average (1, 5, 15 min) at the end: 1.00 2.00 3.00"
