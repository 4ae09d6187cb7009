"""The registry's workloads of the other areas, side by side with baselines.

One test per workload of ``fastgrad.bench.cases`` outside the core area
(numerical gradients, optimizers, compiled replay): each skips with the
reason ("not available: fastgrad.optim not installed", ...) until its module
is installed, and lights up by itself once it lands.  The areas' own,
more detailed benchmark modules sit beside this one.
"""
import pytest

from fastgrad.bench import cases

_PARAMS = [pytest.param(case.name, *p.values, id=f"{case.name}-{p.id}")
           for case in cases.CASES if case.area != "core"
           for p in cases.pytest_params(case.name)]


@pytest.mark.parametrize("name, impl, pair, gc_mode", _PARAMS)
def test_area_workload(workload, name, impl, pair, gc_mode):
    workload(name, impl, pair, gc_mode)
