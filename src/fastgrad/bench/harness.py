"""The benchmark harness: what a workload is, and how its sides are checked and timed.

* A :class:`Case` is one workload (``train_step``, ``backward``, ...).  Its
  ``plan(mode)`` lists :class:`Pair` s: a baseline implementation and the sizes
  at which fastgrad and that baseline run on identical inputs.  Pairs with the
  same sizes share one fastgrad measurement.
* ``case.make(impl, params)`` returns a :class:`Runner` for one implementation
  (``"fastgrad"`` or a baseline name): ``fn()`` is what is timed, ``setup()``
  (optional) runs untimed before each call, ``result(out)`` turns the first
  call's return value into plain numbers that are compared (:func:`compare`)
  with the other side's before any time is reported.
* Anything optional is imported with :func:`require`, which raises
  :class:`NotAvailable` naming what is missing: the row is skipped with that
  reason.

The workloads themselves are in :mod:`fastgrad.bench.workloads` (and the grid's
in :mod:`fastgrad.bench.grid`); the list the front ends run is
:data:`fastgrad.bench.cases.CASES`.
"""
import contextlib
import dataclasses
import gc
import importlib
import math
import statistics
import time
try:
    import resource as _resource
except ImportError:          # Windows: no getrusage, every round counts
    _resource = None         # type: ignore[assignment]
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

__all__ = [
    "NotAvailable", "Mismatch", "Runner", "Pair", "Case", "require", "compare",
    "run_once", "time_runner", "time_pair", "measure_memory", "isolated_gc",
    "describe_error", "Times", "net_of_shared", "context_switches",
]

class NotAvailable(Exception):
    """An optional engine or module is missing: the row is skipped."""


class Mismatch(Exception):
    """fastgrad's result differs from its baseline's."""


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------

def require(module_name: str, attrs: Sequence[str] = ()) -> Any:
    """Import ``module_name`` or raise NotAvailable naming it.

    ``attrs`` are attribute names the workload needs; a module that exists
    but lacks one is reported as not available too (an API not landed yet).
    """
    if module_name == "fastgrad.compiled":
        from fastgrad import _backend
        if not _backend.COMPILED:
            raise NotAvailable("not available: fastgrad.compiled needs the compiled "
                               f"build ({_backend.REASON})")
    try:
        mod = importlib.import_module(module_name)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or module_name
        if missing == module_name or module_name.startswith(missing + "."):
            raise NotAvailable(f"not available: {module_name} not installed") from None
        raise NotAvailable(f"not available: {module_name} needs {missing}, "
                           "which is not installed") from None
    for attr in attrs:
        if not hasattr(mod, attr):
            raise NotAvailable(f"not available: {module_name} has no {attr}")
    return mod


def _flatten(x: Any, out: List[float]) -> List[float]:
    if isinstance(x, (list, tuple)):
        for item in x:
            _flatten(item, out)
    elif hasattr(x, "tolist") and not isinstance(x, (int, float)):
        _flatten(x.tolist(), out)       # numpy array/scalar, torch tensor
    else:
        out.append(float(x))
    return out


def compare(fast: Any, base: Any, rtol: float = 1e-9, atol: float = 1e-12) -> float:
    """Compare two nested results; return the largest relative difference.

    (Each difference is taken relative to ``max(|f|, |b|, atol/rtol)``.)

    Raises :class:`Mismatch` when the structures differ in size or when an
    element fails ``|f - b| <= atol + rtol * |b|`` (NaN equals NaN, an
    infinity only itself).
    """
    f = _flatten(fast, [])
    b = _flatten(base, [])
    if len(f) != len(b):
        raise Mismatch(f"fastgrad returned {len(f)} numbers, the baseline {len(b)}")
    worst = 0.0
    scale = atol / rtol if rtol > 0 else 1e-300
    for i, (x, y) in enumerate(zip(f, b)):
        if math.isnan(x) or math.isnan(y) or math.isinf(x) or math.isinf(y):
            if not (x == y or (math.isnan(x) and math.isnan(y))):
                raise Mismatch(f"item {i}: fastgrad {x!r}, baseline {y!r}")
            continue
        diff = abs(x - y)
        if diff > atol + rtol * abs(y):
            raise Mismatch(f"item {i} of {len(f)}: fastgrad {x!r}, baseline {y!r} "
                           f"(relative difference {diff / max(abs(y), 1e-300):.3g}, "
                           f"tolerance {rtol:g})")
        if diff:
            # relative to the larger magnitude, floored at the scale where
            # atol takes over (near zero a relative figure means nothing)
            worst = max(worst, diff / max(abs(x), abs(y), scale))
    return worst


@dataclasses.dataclass
class Runner:
    """One implementation's side of a workload, ready to be timed.

    ``fn()`` is the timed call; ``setup()`` (optional) runs untimed before each
    call; ``result(out)`` maps the first call's return value to plain numbers
    for the correctness check; ``nodes`` is the graph operations (or array
    elements, parameters...) one call processes, for per-node figures;
    ``close()`` (optional) releases what the runner holds.
    """
    fn: Callable[[], Any]
    setup: Optional[Callable[[], None]] = None
    result: Callable[[Any], Any] = lambda out: out
    nodes: Optional[int] = None
    close: Optional[Callable[[], None]] = None


@dataclasses.dataclass
class Pair:
    """One table row: fastgrad against ``baseline`` at sizes ``params``.

    ``baseline`` None is a fastgrad-only row (a reported figure with no
    peer).  ``rounds``/``fg_rounds`` are the timed repeats of each side.
    """
    baseline: Optional[str]
    params: Dict[str, Any]
    label: str = ""
    rounds: int = 3
    fg_rounds: int = 7

    @property
    def key(self) -> Tuple[Any, ...]:
        return tuple(sorted(self.params.items()))


@dataclasses.dataclass
class Case:
    """A workload: how to build each side, and which pairs to run per mode."""
    name: str
    area: str
    title: str
    unit: str                      # what one timed call is: "step", "backward", ...
    make: Callable[[str, Dict[str, Any]], Runner]
    plan: Callable[[str], List[Pair]]
    kind: str = "time"             # "time", "memory" or "grid" (fastgrad._benchgrid)
    targets: Dict[Optional[str], Tuple[Any, ...]] = dataclasses.field(default_factory=dict)
    rtol: float = 1e-9
    atol: float = 1e-12
    # for rows without a baseline: result -> error message or None
    self_check: Optional[Callable[[Any], Optional[str]]] = None
    # work both sides do that is not the subject (num_grad: the calls to f):
    # params -> Runner; the CLI subtracts its time from both before the ratio
    shared: Optional[Callable[[Dict[str, Any]], Runner]] = None
    # run the case's pairs bound to one CPU with BLAS on one thread (array
    # peers that would otherwise use every core: fastgrad.bench.grid.single_core)
    single_core: bool = False
    shared_what: str = "shared work"   # what ``shared`` times, for the report


@dataclasses.dataclass
class Times:
    """The timed rounds of one side: wall clock (``time.perf_counter``),
    process CPU time (``time.process_time``), seconds per round, and the
    context switches of the process during each round (-1: unknown).

    Verdicts are taken on CPU time: on a shared machine, other processes
    lengthen a round's wall time (this process waits for a core) far more
    than its CPU time.  Not entirely, though: a round the scheduler cut
    (a context switch inside it) resumes with caches and TLB refilled by
    the other processes, and the refill is this process's CPU time.  For a
    ~1 ms call that is a large share (fastgrad's backward: median 1.05 ms
    idle, 2.41 ms among busy loops at load ~7; micrograd's 55 ms call: +25%),
    so :attr:`cpu_s` -- the figure verdicts use -- is the median over the
    rounds that ran *uninterrupted* whenever there are at least
    :attr:`MIN_CLEAN` of them, otherwise over every round.  On an idle
    machine nearly every round is uninterrupted and both medians agree.
    """
    wall: List[float] = dataclasses.field(default_factory=list)
    cpu: List[float] = dataclasses.field(default_factory=list)
    switches: List[int] = dataclasses.field(default_factory=list)

    #: unpreempted rounds needed for :attr:`cpu_s` to be taken over them alone
    MIN_CLEAN = 5

    def add(self, wall: float, cpu: float, switches: int = -1) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)
        self.switches.append(switches)

    def __len__(self) -> int:
        return len(self.wall)

    @property
    def median_wall(self) -> float:
        return statistics.median(self.wall)

    @property
    def median_cpu(self) -> float:
        """The median CPU time over every round, preempted ones included."""
        return statistics.median(self.cpu)

    @property
    def clean_cpu(self) -> List[float]:
        """CPU times of the rounds with no context switch (none if unknown)."""
        return [c for c, n in zip(self.cpu, self.switches) if n == 0]

    @property
    def preempted(self) -> int:
        """How many rounds had a context switch inside them."""
        return sum(n > 0 for n in self.switches)

    @property
    def clean_only(self) -> bool:
        """Whether :attr:`cpu_s` is taken over the unpreempted rounds alone."""
        return len(self.clean_cpu) >= self.MIN_CLEAN

    @property
    def cpu_rounds(self) -> List[float]:
        """The CPU times :attr:`cpu_s` is the median of."""
        return self.clean_cpu if self.clean_only else self.cpu

    @property
    def cpu_s(self) -> float:
        """The side's CPU-time figure (what verdicts compare): the median over
        the unpreempted rounds when there are enough, else over all."""
        return statistics.median(self.cpu_rounds)


# ---------------------------------------------------------------------------
# timing and memory
# ---------------------------------------------------------------------------

def run_once(runner: Runner) -> Any:
    """The warm-up call: run setup and fn once, return the comparable result."""
    if runner.setup is not None:
        runner.setup()
    out = runner.fn()
    res = runner.result(out)
    del out
    return res


def time_runner(runner: Runner, rounds: int, gc_off: bool = False,
                warmup: bool = False) -> Times:
    """``rounds`` timed calls (wall and CPU time of each).

    Each round runs ``setup()`` untimed, then ``fn()`` timed; whatever fn
    returns is dropped after the clocks stop.  With ``gc_off`` the cyclic
    collector is disabled during the rounds (and a full collection follows).
    """
    if warmup:
        run_once(runner)
    times = Times()
    was_enabled = gc.isenabled()
    if gc_off:
        gc.disable()
    try:
        for _ in range(rounds):
            times.add(*_call(runner))
    finally:
        if gc_off and was_enabled:
            gc.enable()
            gc.collect()
    return times


@contextlib.contextmanager
def isolated_gc(unfreeze: bool = True) -> Iterator[None]:
    """Run a block as if the process held only what the block creates.

    Collects, then freezes (``gc.freeze``) every object alive so far --
    imported modules (PyTorch brings hundreds of thousands), earlier rows'
    leftovers -- so that the cyclic collector's passes inside the block walk
    only the block's own objects; on exit, collects the block's garbage.
    Without it, a micrograd row timed after ``import torch`` pays for torch's
    objects on each full collection, and the figures would depend on the
    order the rows run in.  With ``unfreeze=False`` the frozen objects stay
    frozen (cheap for a sequence of blocks: each collection then skips
    them); the caller runs ``gc.unfreeze()`` at the end.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        if unfreeze:
            gc.unfreeze()
        gc.collect()


def context_switches() -> int:
    """Context switches of this process so far (voluntary and involuntary,
    every thread), or -1 where the OS does not count them."""
    if _resource is None:
        return -1
    ru = _resource.getrusage(_resource.RUSAGE_SELF)
    return int(ru.ru_nvcsw + ru.ru_nivcsw)


def _call(runner: Runner) -> Tuple[float, float, int]:
    """One timed round, (wall s, CPU s, context switches): setup untimed, fn
    timed, its return dropped.  The switches are counted around fn alone
    (-1 where unknown); getrusage costs ~1 us, outside the clocks."""
    if runner.setup is not None:
        runner.setup()
    wall, cpu = time.perf_counter, time.process_time
    n0 = context_switches()
    t0, c0 = wall(), cpu()
    out = runner.fn()
    c1, t1 = cpu(), wall()
    n1 = context_switches()
    del out                     # freeing what fn returned: untimed
    return t1 - t0, c1 - c0, (n1 - n0 if n0 >= 0 else -1)


def _warm_up(runner: Runner, seconds: float) -> None:
    """Untimed calls for at least ``seconds`` of CPU time (at least one call).

    One call is not enough for a quick workload: after the other side's
    block, fastgrad's demo step takes 5-8 calls to settle back (10 ms, then
    down to 5.3 ms on this machine: allocator and cache state), so the first
    rounds of each block would be slow for reasons no user loop sees.  The
    budget is CPU time, so that a loaded machine (where 0.1 s of wall time
    holds a third as many calls) warms up as many calls as an idle one;
    capped at 10x ``seconds`` of wall time (a call that mostly waits).
    """
    end, wall_end = time.process_time() + seconds, time.perf_counter() + 10 * seconds
    _call(runner)
    while time.process_time() < end and time.perf_counter() < wall_end:
        _call(runner)


def time_pair(fast: Runner, base: Runner, fast_rounds: int, base_rounds: int,
              gc_off: bool = False, blocks: int = 3,
              warm_s: float = 0.1) -> Tuple[Times, Times]:
    """Time two runners in alternating blocks of rounds; return both sides' Times.

    On a shared machine the load changes from one second to the next; taking
    fastgrad's rounds in blocks between the baseline's puts both under the
    same conditions, so their ratio holds even when absolute times drift.
    The baseline's first block follows its check call directly; every other
    block starts with an untimed ``gc.collect()`` (collector on: garbage the
    other side left is not collected on this side's clock) and untimed calls
    of its own for ``warm_s`` seconds (at least one), so that each timed
    round runs as in a loop of many -- caches and allocator warm, and the
    previous round's garbage pending for the collector, which then runs as
    it does for users.
    """
    fast_times, base_times = Times(), Times()
    blocks = max(1, min(blocks, fast_rounds, base_rounds))
    sides = ((base, base_rounds, base_times), (fast, fast_rounds, fast_times))
    was_enabled = gc.isenabled()
    if gc_off:
        gc.disable()
    try:
        for k in range(blocks):
            for runner, rounds, times in sides:
                share = (k + 1) * rounds // blocks - k * rounds // blocks
                if share == 0:
                    continue
                if not (runner is base and k == 0):
                    if not gc_off:
                        gc.collect()
                    _warm_up(runner, warm_s)
                for _ in range(share):
                    times.add(*_call(runner))
        # On a loaded machine many rounds are preempted (their CPU time is
        # inflated, see Times): a side with short calls that can run
        # uninterrupted (it had at least one such round) but has fewer such
        # rounds than it needs gets more blocks, still alternating, up to
        # MAX_EXTRA times its planned rounds in all.  (Among six busy loops on
        # 2 cores, 84-94% of fastgrad's 1 ms backward rounds were preempted.)
        while True:
            todo = [(r, n, t) for r, n, t in sides
                    if _wants_more(t, n) and len(t) < MAX_EXTRA * n]
            if not todo:
                break
            for runner, rounds, times in todo:
                if not gc_off:
                    gc.collect()
                _warm_up(runner, warm_s)
                for _ in range(max(1, rounds // blocks)):
                    times.add(*_call(runner))
    finally:
        if gc_off and was_enabled:
            gc.enable()
            gc.collect()
    return fast_times, base_times


#: calls shorter than this (median CPU seconds) get more rounds when too few
#: ran uninterrupted: a preemption's cache refill is a large share of a short
#: call (fastgrad's 1 ms backward: +20-130% at load ~7) and a small one of a
#: long call (micrograd's 55 ms backward: +10-25%), and long calls would make
#: the extra rounds cost seconds (build vs micrograd: 0.45 s a round)
SHORT_CALL_S = 0.02
#: a side topped up with more rounds stops at this many times its planned ones
MAX_EXTRA = 6


def _wants_more(times: Times, rounds: int) -> bool:
    """Whether a side should get more rounds: some of its rounds were
    preempted, at least one was not (it can run uninterrupted at this load),
    and fewer than ``Times.MIN_CLEAN`` or half its planned ``rounds`` were
    not, and its calls are short (:data:`SHORT_CALL_S`).  (A side none of
    whose rounds was preempted -- the idle case -- is left as planned.)"""
    clean = len(times.clean_cpu)
    return (times.preempted > 0 and 0 < clean < max(Times.MIN_CLEAN, (rounds + 1) // 2)
            and statistics.median(times.cpu) < SHORT_CALL_S)


def measure_memory(runner: Runner) -> Tuple[int, Any]:
    """Bytes held (tracemalloc) by what ``fn()`` returns, and its result.

    The collector is off during the measurement so that unrelated garbage
    freed meanwhile does not shrink the figure.
    """
    import tracemalloc
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    started = tracemalloc.is_tracing()
    if not started:
        tracemalloc.start()
    try:
        if runner.setup is not None:
            runner.setup()
        before = tracemalloc.get_traced_memory()[0]
        out = runner.fn()
        after = tracemalloc.get_traced_memory()[0]
        res = runner.result(out)
        del out
    finally:
        if not started:
            tracemalloc.stop()
        if was_enabled:
            gc.enable()
    return after - before, res


def describe_error(exc: BaseException) -> str:
    """``"Type: message"`` of an exception, on one line of at most 160 characters."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text if len(text) < 160 else text[:157] + "..."


def _mad(xs: List[float]) -> float:
    m = statistics.median(xs)
    return statistics.median(abs(x - m) for x in xs)


def net_of_shared(total: Times, shared: Times) -> Optional[float]:
    """CPU seconds of ``total`` net of the ``shared`` work both sides do, or
    None when the difference is below what the rounds can resolve.

    Resolvable means above three median absolute deviations of either side's
    rounds and above 1% of the total: a difference inside the rounds'
    scatter (or a negative one) is timer noise, not a figure.  Both figures
    are :attr:`Times.cpu_s` (the unpreempted rounds' median when there are
    enough), the deviations those of the same rounds.
    """
    net = total.cpu_s - shared.cpu_s
    noise = 3.0 * max(_mad(total.cpu_rounds), _mad(shared.cpu_rounds))
    if net <= max(noise, 0.01 * total.cpu_s, 0.0):
        return None
    return net
