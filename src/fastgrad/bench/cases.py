"""The registry of workloads: :data:`CASES`, each with its sizes per mode.

``fastgrad bench`` (:mod:`fastgrad.bench.cli`) runs them as a table; the
pytest-benchmark suite (``benchmarks/``) parametrizes over them with
:func:`pytest_params`.  A plan lists the :class:`~fastgrad.bench.harness.Pair` s
of a workload for a mode (``smoke``: tiny sizes, checks only; ``quick``: the
default; ``full``: larger sizes, more rounds).
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

from fastgrad.bench.harness import Case, Pair, Runner
from fastgrad.bench.irregular import make_irregular
from fastgrad.bench.workloads import (
    make_backward, make_backward_scaling, make_build, make_deep_chain, make_forward,
    make_gradcheck, make_memory, make_num_grad, make_optim, make_replay_record,
    make_replay_train_step, make_sgd_array, make_train_step, shared_num_grad_calls,
)

__all__ = ["CASES", "AREAS", "BASELINE_LABELS", "get_case", "bench_matrix", "bench_mode",
           "pytest_params"]

# ---------------------------------------------------------------------------
# the registry
# ---------------------------------------------------------------------------

def _rounds(mode: str, fast: int, slow: int) -> Tuple[int, int]:
    """(fastgrad rounds, baseline rounds) for a mode."""
    if mode == "smoke":
        return 3, 3
    if mode == "full":
        return 2 * fast, 2 * slow
    return fast, slow


def _plan_train_step(mode: str) -> List[Pair]:
    pts = 3 if mode == "smoke" else 100
    fg, slow = _rounds(mode, 15, 3)
    p = {"points": pts}
    return [Pair("micrograd", p, rounds=slow, fg_rounds=fg),
            Pair("reference", p, rounds=slow, fg_rounds=fg),
            Pair("torch_scalar", p, rounds=slow, fg_rounds=fg),
            Pair("torch_nn", p, rounds=fg * 3, fg_rounds=fg)]


def _plan_backward(mode: str) -> List[Pair]:
    pts = 3 if mode == "smoke" else 100
    fg, slow = _rounds(mode, 21, 3)
    p = {"points": pts}
    return [Pair("micrograd", p, rounds=slow, fg_rounds=fg),
            Pair("reference", p, rounds=slow, fg_rounds=fg),
            Pair("torch_scalar", p, rounds=slow, fg_rounds=fg)]


def _plan_backward_scaling(mode: str) -> List[Pair]:
    sizes = {"smoke": [2000, 20000], "quick": [10**5, 10**6],
             "full": [10**5, 10**6, 10**7]}[mode]
    fg, _ = _rounds(mode, 5, 3)
    return [Pair(None, {"nodes": s}, label=f"{s:.0e} nodes".replace("e+0", "e"),
                 fg_rounds=fg) for s in sizes]


def _plan_memory(mode: str) -> List[Pair]:
    p = {"points": 3 if mode == "smoke" else 100}
    return [Pair("micrograd", p, rounds=1, fg_rounds=1),
            Pair("reference", p, rounds=1, fg_rounds=1),
            Pair("torch_scalar", p, rounds=1, fg_rounds=1)]


def _plan_build(mode: str) -> List[Pair]:
    p = {"points": 50 if mode == "smoke" else 2000}
    fg, slow = _rounds(mode, 15, 5)
    return [Pair("floats", p, rounds=fg, fg_rounds=fg),
            Pair("micrograd", p, rounds=slow, fg_rounds=fg),
            Pair("reference", p, rounds=slow, fg_rounds=fg)]


def _plan_deep_chain(mode: str) -> List[Pair]:
    fg, slow = _rounds(mode, 7, 3)
    # micrograd's recursive topological sort stops near depth 1000 nodes
    shallow = {"depth": 30 if mode == "smoke" else 250}
    mid = {"depth": 300 if mode == "smoke" else 20000}
    deep = {"depth": 3000 if mode == "smoke" else (10**6 if mode == "quick" else 3 * 10**6)}
    return [Pair("micrograd", shallow, label=f"depth {shallow['depth']}",
                 rounds=slow * 3, fg_rounds=fg * 3),
            Pair("reference", mid, label=f"depth {mid['depth']}",
                 rounds=slow, fg_rounds=fg),
            Pair("torch_scalar", mid, label=f"depth {mid['depth']}",
                 rounds=slow, fg_rounds=fg),
            Pair(None, deep, label=f"depth {deep['depth']:.0e}".replace("e+0", "e"),
                 fg_rounds=3)]


def _plan_num_grad(mode: str) -> List[Pair]:
    p = {"elements": 200 if mode == "smoke" else 10**5}
    fg, slow = _rounds(mode, 7, 3)
    return [Pair("nditer", p, rounds=slow, fg_rounds=fg)]


def _plan_gradcheck(mode: str) -> List[Pair]:
    p = {"points": 2 if mode == "smoke" else 10}
    return [Pair(None, p, fg_rounds=3)]


def _plan_optim(mode: str) -> List[Pair]:
    p = {"params": 200 if mode == "smoke" else 10**4}
    fg, slow = _rounds(mode, 25, 9)
    return [Pair("python_loop", p, rounds=slow, fg_rounds=fg)]


def _plan_replay_record(mode: str) -> List[Pair]:
    return [Pair(None, {}, fg_rounds=3 if mode == "smoke" else 7)]


def _plan_sgd_array(mode: str) -> List[Pair]:
    p = {"params": 200 if mode == "smoke" else 10**4}
    fg, _ = _rounds(mode, 25, 25)
    return [Pair("numpy", p, rounds=fg, fg_rounds=fg)]


def _plan_replay(mode: str) -> List[Pair]:
    pts = 3 if mode == "smoke" else 100
    fg, slow = _rounds(mode, 15, 3)
    p = {"points": pts}
    return [Pair("torch_nn", p, rounds=fg, fg_rounds=fg),
            Pair("micrograd", p, rounds=slow, fg_rounds=fg),
            Pair("eager", p, rounds=fg, fg_rounds=fg)]


def _plan_irregular(mode: str, per_row: bool = False) -> List[Pair]:
    # Rogozhnikov's graph (fastgrad.bench.irregular): 1k ops (1,850 nodes)
    # and, in full mode, 10k ops; per row on fewer rows (one call per row)
    sizes = {"smoke": [40], "quick": [1000], "full": [1000, 10000]}[mode]
    n = {"smoke": 16, "quick": 300 if per_row else 3000,
         "full": 500 if per_row else 10000}[mode]
    fg, slow = _rounds(mode, 3, 3)
    out = []
    for ops in sizes:
        p = {"ops": ops, "rows": n, "per_row": per_row}
        out += [Pair("c_tape", p, label=f"{ops} ops", rounds=slow, fg_rounds=fg),
                Pair("numba_tape", p, label=f"{ops} ops", rounds=slow, fg_rounds=fg)]
    return out


def _plan_irregular_row(mode: str) -> List[Pair]:
    return _plan_irregular(mode, per_row=True)


def make_grid(impl: str, params: Dict[str, Any]) -> Runner:
    """One side of one H x N grid cell (:mod:`fastgrad.bench.grid`; issue 13)."""
    from fastgrad.bench import grid   # imported when the grid runs
    return grid.make_runner(impl, params)


def _plan_grid(mode: str) -> List[Pair]:
    from fastgrad.bench import grid
    return grid.plan(mode)


def make_styles(impl: str, params: Dict[str, Any]) -> Runner:
    """One side of a model-code-styles row (:mod:`fastgrad.bench.styles`; issue 20)."""
    from fastgrad.bench import styles   # imported when the workload runs
    return styles.make_runner(impl, params)


def _plan_styles(mode: str) -> List[Pair]:
    from fastgrad.bench import styles
    return styles.plan(mode)


def _gradcheck_ok(res: Any) -> Optional[str]:
    return None if res else "gradcheck reported a mismatch on the demo loss"


CASES = [
    Case("train_step", "core", "micrograd demo step: forward over 100 points, "
         "zero_grad, backward, SGD update", "step", make_train_step,
         _plan_train_step, targets={"micrograd": (100.0, ">= 100x")}),
    Case("forward", "core", "the demo step's forward alone (building the loss "
         "graph over 100 points)", "forward", make_forward, _plan_backward),
    Case("backward", "core", "backward() alone on the demo step's graph",
         "backward", make_backward, _plan_backward,
         targets={"micrograd": (40.0, ">= 40x")}),
    Case("backward_scaling", "core", "backward() alone on demo-shaped graphs "
         "of growing size (ns/node should stay flat)", "backward",
         make_backward_scaling, _plan_backward_scaling),
    Case("build", "core", "building a graph with operators (13 ops/point)",
         "build", make_build, _plan_build,
         targets={"floats": (1 / 3, "<= 3x floats")}),
    Case("memory", "core", "memory of the demo step's graph (tracemalloc)",
         "graph", make_memory, _plan_memory, kind="memory",
         targets={"micrograd": (10.0, "<= 1/10")}),
    Case("deep_chain", "core", "build + backward + free a chain "
         "x = relu(x*w + 1e-4)", "chain", make_deep_chain, _plan_deep_chain),
    Case("num_grad", "numgrad", "num_grad (forward differences) of a trivial f "
         "over 1e5 elements; speed-up net of the calls to f", "call", make_num_grad,
         _plan_num_grad, targets={"nditer": (10.0, ">= 10x (net)")}, rtol=1e-12,
         atol=0.0, shared=shared_num_grad_calls, shared_what="the calls to f"),
    Case("gradcheck", "numgrad", "gradcheck of the demo MLP loss "
         "(all 337 parameters)", "call", make_gradcheck, _plan_gradcheck,
         self_check=_gradcheck_ok),
    Case("sgd_step", "optim", "SGD step over 10,000 Value parameters", "step",
         make_optim("sgd"), _plan_optim,
         targets={"python_loop": (20.0, ">= 20x")}),
    Case("sgd_momentum_step", "optim", "SGD(momentum=0.9) step over 10,000 "
         "Value parameters", "step", make_optim("momentum"), _plan_optim,
         targets={"python_loop": (20.0, ">= 20x")}),
    Case("sgd_array_step", "optim", "SGD step on a 10,000-element float64 "
         "array (the array path)", "step", make_sgd_array, _plan_sgd_array,
         targets={"numpy": (0.5, "<= 2x numpy")}),
    Case("adam_step", "optim", "Adam step over 10,000 Value parameters", "step",
         make_optim("adam"), _plan_optim),
    Case("replay_train_step", "replay", "the demo step through compiled graph "
         "replay", "step", make_replay_train_step, _plan_replay,
         targets={"torch_nn": (1.0, ">= 1x"), "micrograd": (2000.0, ">= 2000x")}),
    Case("replay_record", "replay", "recording the demo step for replay "
         "(one-off)", "record", make_replay_record, _plan_replay_record),
    Case("styles", "replay", "model code styles: 2-64-64-1 / digits written as users "
         "write them (bias forms, tanh, sigmoid, softmax CE), compiled, vs array peers",
         "step", make_styles, _plan_styles, rtol=1e-9, atol=1e-12, single_core=True),
    Case("irregular", "replay", "irregular scalar graph (softplus, 4-term sums, "
         "products, 4-way softmax; forward + backward of 100 inputs per row): "
         "compiled, one batch call", "rows", make_irregular, _plan_irregular,
         targets={"c_tape": (2.0, "<= 0.5x C tape")}),
    Case("irregular_per_row", "replay", "the irregular graph, value_and_grad one "
         "row at a time", "rows", make_irregular, _plan_irregular_row,
         targets={"c_tape": (1 / 1.5, "<= 1.5x C tape")}),
    # kind "grid": the CLI runs all the peers of a cell together
    # (fastgrad.bench.grid.run_cell: checked, then timed interleaved)
    Case("grid", "grid", "H x N grid: full-batch MLP(2, [H, H, 1]) step, compiled "
         "replay vs NumPy/PyTorch/JAX (ratio = fastgrad / best peer)", "step",
         make_grid, _plan_grid, kind="grid", rtol=1e-9, atol=1e-12),
]

AREAS = sorted({c.area for c in CASES})

BASELINE_LABELS = {
    None: "-",
    "micrograd": "micrograd 0.1.0",
    "reference": "fastgrad.reference",
    "torch_scalar": "torch scalar",
    "torch_nn": "torch.nn 1-thread",
    "floats": "Python floats",
    "nditer": "lecture nditer",
    "python_loop": "Python loop",
    "numpy": "numpy in-place",
    "eager": "fastgrad eager",
    "numpy_mlp": "NumPy fwd/bwd 1-thread",
    "torch_eager": "torch eager 1-thread",
    "torch_compile": "torch.compile 1-thread",
    "jax_jit": "jax.jit 1-thread",
    "hips_autograd": "HIPS autograd",
    "c_tape": "C tape (cc -O2, one row at a time)",
    "numba_tape": "numba tape",
}


def bench_matrix(case_name: str, mode: str = "quick", gc_modes: Sequence[str] = ("on",),
                 ) -> List[Tuple[str, str, Pair, str]]:
    """The (test id, impl, pair, gc mode) combinations of one workload.

    For the pytest-benchmark suite: fastgrad once per distinct size, then
    every baseline at its pair's size.
    """
    case = get_case(case_name)
    out = []
    for g in gc_modes:
        seen = set()
        for pair in case.plan(mode):
            tag = ("-" + pair.label.replace(" ", "_")) if pair.label else ""
            gtag = f"-gc_{g}" if len(gc_modes) > 1 else ""
            if pair.key not in seen:
                seen.add(pair.key)
                out.append((f"fastgrad{tag}{gtag}", "fastgrad", pair, g))
            if pair.baseline is not None:
                out.append((f"{pair.baseline}{tag}{gtag}", pair.baseline, pair, g))
    return out


def bench_mode() -> str:
    """Sizes for ``pytest benchmarks/``: $FASTGRAD_BENCH_MODE (default quick)."""
    import os
    mode = os.environ.get("FASTGRAD_BENCH_MODE", "quick")
    if mode not in ("smoke", "quick", "full"):
        raise ValueError("FASTGRAD_BENCH_MODE must be smoke, quick or full, "
                         f"not {mode!r}")
    return mode


def pytest_params(case_name: str, gc_modes: Sequence[str] = ("on",),
                  mode: Optional[str] = None) -> List[Any]:
    """``pytest.param(impl, pair, gc_mode)`` list of one workload (benchmarks/).

    ``mode`` defaults to :func:`bench_mode`.
    """
    import pytest
    mode = mode or bench_mode()
    return [pytest.param(impl, pair, g, id=ident)
            for ident, impl, pair, g in bench_matrix(case_name, mode, gc_modes)]


def get_case(name: str) -> Case:
    """The Case called ``name`` (KeyError if none)."""
    for c in CASES:
        if c.name == name:
            return c
    raise KeyError(name)
