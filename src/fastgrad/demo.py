"""``fastgrad demo``: micrograd's two-moons demo, trained by fastgrad.

The same experiment as micrograd's ``demo.ipynb``, number for number:
``make_moons(n_samples=100, noise=0.1)`` with ``np.random.seed(1337)`` and
``random.seed(1337)`` (``--seed``), ``MLP(2, [16, 16, 1])``, the svm
"max-margin" loss plus ``1e-4`` L2, and plain SGD with the learning rate
``1.0 - 0.9*k/100``.  A progress bar shows loss and accuracy; at the end the
command prints the final accuracy, the time per step, the pure-Python
reference engine's time per step (a couple of steps measured in the same run)
and writes ``decision_boundary.png`` and ``loss.png``.

Engines are pluggable through :data:`STEP_FACTORIES`: each entry builds the
callable that runs one training step for a model, so the compiled-replay
engine only has to provide ``fastgrad.compiled.make_demo_step`` (see
:func:`_compiled_step_factory`).
"""
import argparse
import contextlib
import os
import random
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Optional, Sequence

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# step(indices, lr) -> (loss, accuracy); indices None = every point
Step = Callable[[Optional["npt.NDArray[Any]"], float], tuple[float, float]]

__all__ = ["add_arguments", "run", "load_engine", "make_step", "STEP_FACTORIES"]

N_SAMPLES = 100          # micrograd's notebook
NOISE = 0.1
HIDDEN = [16, 16, 1]
ALPHA = 1e-4             # L2 strength
DEFAULT_STEPS = 100
DEFAULT_SEED = 1337
GRID_SIZE = 60           # decision-boundary grid: GRID_SIZE x GRID_SIZE points
ENGINES = ("fastgrad", "reference", "compiled")
PNG_NAMES = ("decision_boundary.png", "loss.png")


class DemoError(Exception):
    """A problem reported as one line on stderr, exit code 2."""


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``fastgrad demo`` options to an argparse parser.

    Examples
    --------
    >>> import argparse
    >>> from fastgrad.demo import add_arguments
    >>> parser = argparse.ArgumentParser(prog="fastgrad demo")
    >>> add_arguments(parser)
    >>> parser.parse_args(["--steps", "5"]).steps
    5
    """
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"training steps (default {DEFAULT_STEPS})")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="train on a random subset of N points each step, as "
                             "micrograd's notebook does (default: all 100 points)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="seed for the data, the weights and the batches "
                             f"(default {DEFAULT_SEED}, micrograd's notebook)")
    parser.add_argument("--engine", choices=ENGINES, default="fastgrad",
                        help="fastgrad (compiled eager engine, default), reference "
                             "(pure Python) or compiled (graph replay)")
    parser.add_argument("--out", default=".", metavar="DIR",
                        help="directory for decision_boundary.png and loss.png "
                             "(default: the current directory)")
    parser.add_argument("--no-plot", action="store_true",
                        help="do not draw or write the pictures")
    parser.add_argument("--reference-steps", type=int, default=2, metavar="N",
                        help="steps of the pure-Python reference engine to time "
                             "for comparison (default 2; 0 skips)")


def _fail(message: object) -> int:
    print(f"fastgrad demo: error: {message}", file=sys.stderr)
    return 2


def _check_args(args: argparse.Namespace) -> None:
    if args.steps < 1:
        raise DemoError(f"--steps must be a positive integer, got {args.steps}")
    if args.batch_size is not None and not 1 <= args.batch_size <= N_SAMPLES:
        raise DemoError(f"--batch-size must be between 1 and the {N_SAMPLES} data "
                        f"points, got {args.batch_size}")
    if not 0 <= args.seed < 2**32:
        raise DemoError(f"--seed must be between 0 and 2**32 - 1, got {args.seed}")
    if args.reference_steps < 0:
        raise DemoError(f"--reference-steps must be 0 or more, got {args.reference_steps}")


def _check_extras(plot: bool) -> None:
    """Import the ``demo`` extra; raise DemoError naming what is missing."""
    wanted = [("sklearn.datasets", "scikit-learn"), ("tqdm", "tqdm")]
    if plot:
        wanted.append(("matplotlib", "matplotlib"))
    missing = []
    for module, package in wanted:
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise DemoError(f"the demo needs {', '.join(missing)}: "
                        'pip install "fastgrad[demo]" (from a checkout: '
                        'pip install ".[demo]")')


def _probe_writable(directory: str) -> None:
    """Raise DemoError unless the pictures can be written in directory (or it can be made)."""
    path = os.path.abspath(directory)
    probe = path
    while not os.path.exists(probe):        # the directory will be created later
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise DemoError(f"--out {directory}: {probe} is not a directory")
    try:
        fd, name = tempfile.mkstemp(dir=probe, prefix=".fastgrad-demo-probe-")
        os.close(fd)
        os.remove(name)
    except OSError as exc:
        raise DemoError(f"--out {directory}: cannot write there ({exc.strerror})") from None
    _check_targets(directory)


def _check_targets(directory: str) -> None:
    """Raise DemoError if a picture's path is taken by a directory (a file cannot replace it).

    Checked before training and again just before the pictures are moved into
    place, so that the demo never writes one picture and then fails on the other.
    """
    for name in PNG_NAMES:
        target = os.path.join(directory, name)
        # a file (or a symlink, replaced itself) can be replaced; a directory cannot
        if os.path.isdir(target) and not os.path.islink(target):
            raise DemoError(f"--out {directory}: {target} is a directory; cannot write "
                            f"{name} there")


# ---------------------------------------------------------------------------
# engines
# ---------------------------------------------------------------------------

class Engine:
    """What the demo needs from an engine: Value, MLP and no_grad."""

    def __init__(self, name: str, Value: Any, MLP: Any,
                 no_grad: Callable[[], ContextManager[Any]]) -> None:
        self.name = name
        self.Value = Value
        self.MLP = MLP
        self.no_grad = no_grad


def load_engine(name: str) -> Engine:
    """Return the :class:`Engine` called name.

    Parameters
    ----------
    name : {"fastgrad", "reference", "compiled"}
        ``compiled`` trains a fastgrad model whose step comes from
        ``fastgrad.compiled`` (see :func:`make_step`).

    Returns
    -------
    Engine

    Raises
    ------
    DemoError
        If the engine is unknown or not part of this fastgrad.

    Examples
    --------
    >>> from fastgrad.demo import load_engine
    >>> load_engine("fastgrad").MLP(2, [16, 16, 1])   # doctest: +ELLIPSIS
    MLP of [Layer of [ReLUNeuron(2), ...
    """
    if name in ("fastgrad", "compiled"):
        from fastgrad.engine import Value, no_grad
        from fastgrad.nn import MLP
        if name == "compiled":
            _compiled_module()
        return Engine(name, Value, MLP, no_grad)
    if name == "reference":
        try:
            import fastgrad.reference as ref
        except ImportError:
            raise DemoError("--engine reference needs fastgrad.reference (the "
                            "pure-Python engine), which this fastgrad does not "
                            "have") from None
        return Engine(name, ref.Value, ref.MLP,
                      getattr(ref, "no_grad", contextlib.nullcontext))
    raise DemoError(f"--engine must be one of {', '.join(ENGINES)}, got {name!r}")


def _compiled_module() -> Any:
    try:
        import fastgrad.compiled as compiled
    except ImportError:
        raise DemoError("--engine compiled needs fastgrad.compiled (compiled graph "
                        "replay), which this fastgrad does not have yet; use "
                        "--engine fastgrad") from None
    if not hasattr(compiled, "make_demo_step"):
        raise DemoError("--engine compiled needs fastgrad.compiled.make_demo_step, "
                        "which this fastgrad.compiled does not provide")
    return compiled


def _loss(model: Any, Xb: Sequence[Sequence[float]],
          yb: Sequence[float]) -> tuple[Any, float]:
    """micrograd's demo loss on rows Xb (lists of floats), labels yb (+-1).

    Returns ``(total_loss, accuracy)``, written as in micrograd's notebook so
    that every engine computes the same numbers in the same order.
    """
    scores = [model(row) for row in Xb]
    # svm "max-margin" loss
    losses = [(1 + -yi * si).relu() for yi, si in zip(yb, scores)]
    data_loss = sum(losses) * (1.0 / len(losses))
    # L2 regularization
    reg_loss = ALPHA * sum(p * p for p in model.parameters())
    total_loss = data_loss + reg_loss
    accuracy = [(yi > 0) == (si.data > 0) for yi, si in zip(yb, scores)]
    return total_loss, sum(accuracy) / len(accuracy)


def _sgd(engine: Engine, params: list[Any]) -> Any:
    """fastgrad.optim.SGD for fastgrad Values when it is installed, else None."""
    if engine.name != "fastgrad":
        return None
    try:
        from fastgrad.optim import SGD
    except ImportError:
        return None
    return SGD(params, lr=1.0)


def _eager_step_factory(engine: Engine, model: Any, X: "npt.NDArray[Any]",
                        y: "npt.NDArray[Any]") -> Step:
    """One step = forward, zero_grad, backward, SGD update (the notebook's loop)."""
    params = model.parameters()
    opt = _sgd(engine, params)
    rows, labels = X.tolist(), y.tolist()

    def step(indices: Optional["npt.NDArray[Any]"], lr: float) -> tuple[float, float]:
        Xb = rows if indices is None else [rows[i] for i in indices]
        yb = labels if indices is None else [labels[i] for i in indices]
        total_loss, acc = _loss(model, Xb, yb)
        model.zero_grad()
        total_loss.backward()
        if opt is not None:
            opt.lr = lr
            opt.step()
        else:
            for p in params:
                p.data -= lr * p.grad
        return total_loss.data, acc

    return step


def _compiled_step_factory(engine: Engine, model: Any, X: "npt.NDArray[Any]",
                           y: "npt.NDArray[Any]") -> Step:
    """The hook for compiled replay (``--engine compiled``).

    Uses ``fastgrad.compiled.make_demo_step(model, alpha)``, whose
    ``step(X, y, lr) -> (loss, accuracy)`` replays the recorded per-sample
    graph over the rows of X, leaves the gradients in the parameters' ``.grad``
    and applies the SGD update, as :func:`_eager_step_factory`'s step does.
    """
    compiled_step = _compiled_module().make_demo_step(model, alpha=ALPHA)
    y = y.astype(float)

    def step(indices: Optional["npt.NDArray[Any]"], lr: float) -> tuple[float, float]:
        if indices is None:
            loss, acc = compiled_step(X, y, lr)
        else:
            loss, acc = compiled_step(X[indices], y[indices], lr)
        return float(loss), float(acc)

    return step


#: engine name -> factory(engine, model, X, y) -> step(indices, lr) -> (loss, acc)
STEP_FACTORIES: dict[str, Callable[..., Step]] = {
    "fastgrad": _eager_step_factory,
    "reference": _eager_step_factory,
    "compiled": _compiled_step_factory,
}


def make_step(engine: Engine, model: Any, X: "npt.NDArray[Any]",
              y: "npt.NDArray[Any]") -> Step:
    """Build the training-step callable of an engine for the demo's data.

    Parameters
    ----------
    engine : Engine
        From :func:`load_engine`; its name selects the factory in
        :data:`STEP_FACTORIES`.
    model : MLP
        The engine's model; the step updates its parameters in place.
    X : numpy.ndarray, shape (n, 2)
        The points.
    y : numpy.ndarray, shape (n,)
        Their labels, -1 or +1.

    Returns
    -------
    callable
        ``step(indices, lr) -> (loss, accuracy)``: one forward/backward/SGD
        step on the rows ``indices`` (None: all rows) with learning rate
        ``lr``; loss and accuracy are measured before the update.

    Examples
    --------
    >>> import numpy as np
    >>> from fastgrad.demo import load_engine, make_step
    >>> engine = load_engine("fastgrad")
    >>> model = engine.MLP(2, [4, 1])
    >>> step = make_step(engine, model, np.array([[0.0, 1.0], [1.0, 0.0]]),
    ...                  np.array([1, -1]))
    >>> loss, acc = step(None, 0.1)
    >>> 0.0 <= acc <= 1.0
    True
    """
    return STEP_FACTORIES[engine.name](engine, model, X, y)


def _build_model(engine: Engine, seed: int) -> Any:
    """MLP(2, [16, 16, 1]) drawn from random.seed(seed), leaving random's state alone."""
    state = random.getstate()
    random.seed(seed)
    try:
        return engine.MLP(2, HIDDEN)
    finally:
        random.setstate(state)


def _learning_rate(k: int) -> float:
    return 1.0 - 0.9 * k / 100


# ---------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------

def _data(seed: int) -> tuple["npt.NDArray[Any]", "npt.NDArray[Any]",
                             "np.random.RandomState"]:
    import numpy as np
    from sklearn.datasets import make_moons
    # np.random.seed(seed) then make_moons() in the notebook: same stream
    rng = np.random.RandomState(seed)
    X, y = make_moons(n_samples=N_SAMPLES, noise=NOISE, random_state=rng)
    return X, y * 2 - 1, rng


def _accuracy(engine: Engine, model: Any, X: "npt.NDArray[Any]",
              y: "npt.NDArray[Any]") -> float:
    with engine.no_grad():
        scores = [model(row).data for row in X.tolist()]
    hits: int = sum((yi > 0) == (s > 0) for yi, s in zip(y.tolist(), scores))
    return hits / len(scores)


def _train(engine: Engine, model: Any, X: "npt.NDArray[Any]", y: "npt.NDArray[Any]",
           rng: "np.random.RandomState", steps: int, batch_size: Optional[int],
           progress: bool = True) -> tuple[list[float], list[float], float, float]:
    """Run steps; return (losses, accuracies, seconds spent in the steps, setup seconds).

    The setup (building the step; for the compiled engine, recording the
    graph) is timed apart from the steps.
    """
    from tqdm import tqdm
    t0 = time.perf_counter()
    step = make_step(engine, model, X, y)
    setup = time.perf_counter() - t0
    losses: list[float] = []
    accs: list[float] = []
    spent = 0.0
    # a live bar only on a terminal: written to a file or pipe, its redraws
    # become one line each (114 lines for 100 steps); there a few plain
    # progress lines say the same
    live = progress and sys.stderr.isatty()
    bar = tqdm(range(steps), desc=f"training ({engine.name})", unit="step",
               disable=not live, file=sys.stderr)
    report_at = _report_steps(steps) if progress and not live else set()
    for k in bar:
        idx = None if batch_size is None else rng.permutation(N_SAMPLES)[:batch_size]
        t0 = time.perf_counter()
        loss, acc = step(idx, _learning_rate(k))
        spent += time.perf_counter() - t0
        losses.append(loss)
        accs.append(acc)
        if live:
            bar.set_postfix({"loss": f"{loss:.4f}", "acc": f"{acc * 100:.0f}%"})
        elif k + 1 in report_at:
            print(f"training ({engine.name}): step {k + 1}/{steps}, loss {loss:.4f}, "
                  f"acc {acc * 100:.0f}%", file=sys.stderr, flush=True)
    bar.close()
    return losses, accs, spent, setup


def _report_steps(steps: int) -> set[int]:
    """The steps (1-based) after which a non-terminal run prints a progress line:
    every quarter of the run, at most 4 lines."""
    return {max(1, round(steps * q / 4)) for q in range(1, 5)}


def _time_reference(ref: Engine, args: argparse.Namespace, X: "npt.NDArray[Any]",
                    y: "npt.NDArray[Any]") -> float:
    """Seconds per step of the pure-Python engine ref on the same task."""
    import numpy as np
    model = _build_model(ref, args.seed)
    rng = np.random.RandomState(args.seed)
    _, _, spent, _ = _train(ref, model, X, y, rng, args.reference_steps,
                         args.batch_size, progress=False)
    return spent / int(args.reference_steps)


def _grid(X: "npt.NDArray[Any]",
          n: int = GRID_SIZE) -> tuple["npt.NDArray[Any]", "npt.NDArray[Any]"]:
    import numpy as np
    x_min, x_max = X[:, 0].min() - 1, X[:, 0].max() + 1
    y_min, y_max = X[:, 1].min() - 1, X[:, 1].max() + 1
    xx, yy = np.meshgrid(np.linspace(x_min, x_max, n), np.linspace(y_min, y_max, n))
    return xx, yy


def _plots(engine: Engine, model: Any, X: "npt.NDArray[Any]", y: "npt.NDArray[Any]",
           losses: list[float], accs: list[float], batch_size: Optional[int],
           out: str) -> list[str]:
    """Draw both pictures into temporary files in out, then rename them.

    Returns the final paths.  On any error the temporary files are removed and
    nothing is left in out.
    """
    import numpy as np
    from matplotlib.figure import Figure

    xx, yy = _grid(X)
    with engine.no_grad():        # scoring the grid records no graph
        Z = np.array([model(row).data for row in np.c_[xx.ravel(), yy.ravel()].tolist()])
    Z = Z.reshape(xx.shape)

    boundary = Figure(figsize=(5.5, 5))
    ax = boundary.subplots()
    # light red where the model says -1, light blue where it says +1
    ax.contourf(xx, yy, (Z > 0).astype(float), levels=[-0.5, 0.5, 1.5],
                colors=["#f4a582", "#92c5de"])
    ax.contour(xx, yy, Z, levels=[0.0], colors="k", linewidths=1)
    for label, color, region in ((-1, "#b2182b", "#f4a582"), (1, "#2166ac", "#92c5de")):
        mine = y == label
        ax.scatter(X[mine, 0], X[mine, 1], c=color, s=30, edgecolors="k",
                   linewidths=0.5, label=f"class {label:+d}")
        ax.fill_between([], [], color=region, label=f"model says {label:+d}")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    ax.set_xlabel("x[0] (first moons coordinate)")
    ax.set_ylabel("x[1] (second moons coordinate)")
    ax.set_xlim(xx.min(), xx.max())
    ax.set_ylim(yy.min(), yy.max())
    acc = _accuracy(engine, model, X, y)
    ax.set_title(f"MLP(2, {HIDDEN}) after {len(losses)} steps: "
                 f"{acc * 100:.0f}% train accuracy", fontsize=10)

    curve = Figure(figsize=(6, 4))
    ax1 = curve.subplots()
    steps = np.arange(len(losses))
    ax1.plot(steps, losses, color="tab:blue", label="loss")
    ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss (svm + L2, log scale)", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(steps, np.asarray(accs) * 100, color="tab:orange", label="accuracy")
    ax2.set_ylabel("accuracy on the step's batch (%)", color="tab:orange")
    ax2.set_ylim(0, 105)
    batch = "full batch" if batch_size is None else f"batches of {batch_size}"
    ax1.set_title(f"fastgrad demo ({engine.name} engine, {batch})", fontsize=10)
    curve.tight_layout()

    os.makedirs(out, exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    temps = []
    try:
        for fig, name in zip((boundary, curve), PNG_NAMES):
            fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.", suffix=".png")
            os.close(fd)
            temps.append(tmp)
            fig.savefig(tmp, dpi=100, format="png")
            os.chmod(tmp, 0o666 & ~umask)     # mkstemp made it private
        finals = [os.path.join(out, name) for name in PNG_NAMES]
        _check_targets(out)      # both can be replaced: none is written alone
        for tmp, final in zip(temps, finals):
            os.replace(tmp, final)
        return finals
    finally:
        for tmp in temps:
            if os.path.exists(tmp):
                os.remove(tmp)


def run(args: argparse.Namespace) -> int:
    """Run ``fastgrad demo`` with parsed arguments; return the exit code.

    Parameters
    ----------
    args : argparse.Namespace
        As parsed by a parser given :func:`add_arguments`.

    Returns
    -------
    int
        0 on success; 2 (after a one-line message on stderr, with nothing
        written) for bad options, an unwritable ``--out``, a missing extra or
        an engine this fastgrad lacks.

    Examples
    --------
    >>> from fastgrad.__main__ import main
    >>> main(["demo", "--steps", "2", "--no-plot"])   # doctest: +SKIP
    fastgrad demo: MLP(2, [16, 16, 1]), 337 parameters, ...
    0
    """
    try:
        _check_args(args)
        _check_extras(plot=not args.no_plot)
        engine = load_engine(args.engine)
        if not args.no_plot:
            _probe_writable(args.out)
    except DemoError as exc:
        return _fail(exc)

    X, y, rng = _data(args.seed)
    model = _build_model(engine, args.seed)
    batch = "full batch" if args.batch_size is None else f"batches of {args.batch_size}"
    print(f"fastgrad demo: {model.__class__.__name__}(2, {HIDDEN}), "
          f"{len(model.parameters())} parameters, {N_SAMPLES} moons points, "
          f"{args.steps} steps, {batch}, seed {args.seed}, {engine.name} engine")
    try:
        losses, accs, spent, setup = _train(engine, model, X, y, rng, args.steps,
                                            args.batch_size)
    except KeyboardInterrupt:
        print("fastgrad demo: interrupted; nothing written", file=sys.stderr)
        return 130
    per_step = spent / args.steps
    acc = _accuracy(engine, model, X, y)
    print(f"final loss {losses[-1]:.6f} (last step); training accuracy "
          f"{acc * 100:.1f}% ({round(acc * N_SAMPLES)}/{N_SAMPLES})")
    # the compiled step takes microseconds: "0.01 ms" would say nothing
    step_time = (f"{per_step * 1e6:.1f} us" if per_step < 1e-3
                 else f"{per_step * 1e3:.2f} ms")
    print(f"time: {args.steps} steps in {spent:.3f} s, {step_time} per step "
          f"({engine.name})")
    if engine.name == "compiled":
        print(f"      plus {setup:.3f} s once to record and compile the step's graph")

    if args.reference_steps and engine.name != "reference":
        try:
            ref = load_engine("reference")
        except DemoError:
            print("reference engine: not timed (fastgrad.reference is not installed)")
        else:
            print(f"timing the pure-Python reference engine on {args.reference_steps} "
                  "steps ...", flush=True)
            ref_per_step = _time_reference(ref, args, X, y)
            print(f"reference engine (pure Python): {ref_per_step * 1e3:.1f} ms per "
                  f"step over {args.reference_steps} steps; {engine.name} is "
                  f"{ref_per_step / per_step:.0f}x faster than fastgrad's pure-Python "
                  "reference engine (fastgrad.reference), both timed in this run")

    if not args.no_plot:
        try:
            paths = _plots(engine, model, X, y, losses, accs, args.batch_size, args.out)
        except DemoError as exc:       # --out changed during training
            return _fail(exc)
        except OSError as exc:
            return _fail(f"--out {args.out}: could not write the pictures ({exc})")
        for path in paths:
            print(f"wrote {os.path.abspath(path)}")
    return 0
