"""Optimizers with torch.optim's update rules, the update loop in C.

``SGD`` and ``Adam`` follow ``torch.optim.SGD`` / ``torch.optim.Adam``
(single-tensor path) operation by operation, so a fastgrad model and the same
model in PyTorch (float64) walk the same trajectory.  Two kinds of parameters:

* fastgrad ``Value`` objects, e.g. ``SGD(model.parameters(), lr=0.1)``: the
  Values are gathered once; ``step()`` reads ``.grad`` and writes ``.data``
  through their C fields.
* float64 numpy arrays with gradient arrays beside them (your own arrays, or
  the ones a compiled graph writes into):
  ``SGD.from_arrays([W, b], [dW, db], lr=0.1)``.  ``step()`` reads the
  gradient arrays as they are at that moment and updates the parameter arrays
  in place, so write new gradients *into* those arrays (``dW[...] = ...``).

Both kinds go through the same compiled formula (``fastgrad._optim``): a
Value-path run and an array-path run of the same problem agree bitwise.

``lr_sweep`` tries several learning rates from the same initial weights (the
lecture's "validate the step size").
"""
import math
import numbers
from concurrent.futures import Executor
from typing import Any, Callable, Iterable, Optional, Sequence, TypeVar, Union, cast

import numpy as np
import numpy.typing as npt

from fastgrad._backend import COMPILED
from fastgrad.engine import Value

if COMPILED:
    from fastgrad import _optim
else:  # the pure-Python build: the same kernels in NumPy
    from fastgrad import _optim_py as _optim  # type: ignore[no-redef]

__all__ = ["Optimizer", "SGD", "Adam", "lr_sweep", "LRSweepResult"]

F64 = npt.NDArray[np.float64]
_Opt = TypeVar("_Opt", bound="Optimizer")
_MAX_STEP = 2 ** 53                  # largest step count load_state_dict accepts
_NONNEGATIVE_STATE = ("exp_avg_sq", "max_exp_avg_sq")


# ---------------------------------------------------------------------------
# argument checking
# ---------------------------------------------------------------------------

def _real(owner: str, name: str, x: float, *, minimum: Optional[float] = None,
          below: Optional[float] = None) -> float:
    """float(x) for a real, finite hyper-parameter; TypeError/ValueError else."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number, got "
                        f"{type(x).__name__} {x!r}")
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{owner}: invalid {name} {x!r} (must be finite)")
    if minimum is not None and x < minimum:
        raise ValueError(f"{owner}: invalid {name} {x!r} (must be >= {minimum})")
    if below is not None and not x < below:
        raise ValueError(f"{owner}: invalid {name} {x!r} (must be < {below})")
    return x


def _flag(owner: str, name: str, x: bool) -> bool:
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{owner}: {name} must be a bool, got "
                        f"{type(x).__name__} {x!r}")
    return bool(x)


def _value_params(owner: str, params: Iterable[Value]) -> _optim.ValueSlots:
    """The ValueSlots of an iterable of distinct Values."""
    if isinstance(params, (Value, np.ndarray, str, bytes)) or hasattr(params, "parameters"):
        hint = ("; pass model.parameters()" if hasattr(params, "parameters")
                else "")
        raise TypeError(f"{owner}: params must be an iterable of fastgrad "
                        f"Values, got {type(params).__name__}{hint}")
    try:
        params = list(params)
    except TypeError:
        raise TypeError(f"{owner}: params must be an iterable of fastgrad "
                        f"Values, got {type(params).__name__}") from None
    if not params:
        raise ValueError(f"{owner}: got an empty parameter list")
    for i, p in enumerate(params):
        if isinstance(p, np.ndarray):
            raise TypeError(
                f"{owner}: parameter {i} is a numpy array; arrays carry no "
                f"gradient, use {owner}.from_arrays(params, grads, ...)")
        if isinstance(p, dict):
            raise TypeError(f"{owner}: parameter {i} is a dict; parameter "
                            "groups are not supported, pass a flat list of "
                            "Values (one optimizer per group)")
        if not isinstance(p, Value):
            raise TypeError(f"{owner}: parameter {i} is a {type(p).__name__}, "
                            "not a fastgrad Value")
    return _optim.ValueSlots(params)  # also refuses duplicates


def _array_params(owner: str, params: Iterable[F64], grads: Iterable[F64],
                  ) -> tuple[list[F64], list[F64], list[F64], list[F64]]:
    """Validated (params, grads, flat param views, flat grad views)."""
    def as_list(x: Iterable[F64], what: str) -> list[F64]:
        if isinstance(x, np.ndarray):
            raise TypeError(f"{owner}.from_arrays: {what} must be a list of "
                            f"arrays, got a single array (wrap it: [{what[:-1]}])")
        try:
            return list(x)
        except TypeError:
            raise TypeError(f"{owner}.from_arrays: {what} must be a list of "
                            f"numpy arrays, got {type(x).__name__}") from None

    params = as_list(params, "params")
    grads = as_list(grads, "grads")
    if not params:
        raise ValueError(f"{owner}.from_arrays: got an empty parameter list")
    if len(params) != len(grads):
        raise ValueError(f"{owner}.from_arrays: {len(params)} parameter arrays "
                         f"but {len(grads)} gradient arrays")
    for kind, arrays in (("parameter", params), ("gradient", grads)):
        for i, a in enumerate(arrays):
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{owner}.from_arrays: {kind} {i} must be a "
                                f"numpy array, got {type(a).__name__}")
            if a.dtype != np.float64:
                raise TypeError(f"{owner}.from_arrays: {kind} {i} must have "
                                f"dtype float64, got {a.dtype}")
            if not a.flags.c_contiguous:
                raise ValueError(f"{owner}.from_arrays: {kind} {i} must be "
                                 "C-contiguous (use np.ascontiguousarray)")
    for i, (p, g) in enumerate(zip(params, grads)):
        if not p.flags.writeable:
            raise ValueError(f"{owner}.from_arrays: parameter {i} is read-only")
        if p.shape != g.shape:
            raise ValueError(f"{owner}.from_arrays: parameter {i} has shape "
                             f"{p.shape} but its gradient has shape {g.shape}")
        if p.size and np.may_share_memory(p, g):
            raise ValueError(f"{owner}.from_arrays: parameter {i} and its "
                             "gradient share memory")
    for i in range(len(params)):
        for j in range(i):
            if params[i].size and np.may_share_memory(params[i], params[j]):
                raise ValueError(f"{owner}.from_arrays: parameters {j} and {i} "
                                 "share memory (a parameter appears twice)")
    flat_p = [p.reshape(-1) for p in params]   # views: C-contiguous
    flat_g = [g.reshape(-1) for g in grads]
    return params, grads, flat_p, flat_g


# ---------------------------------------------------------------------------
# optimizers
# ---------------------------------------------------------------------------

class Optimizer:
    """Base class of fastgrad's optimizers (one parameter group).

    Subclasses implement ``_check(**hyper) -> dict`` (validate and normalise
    the hyper-parameters), ``_state_names(hyper)`` (the per-scalar state
    arrays the rule needs) and ``_update()`` (one step through the kernels of
    ``fastgrad._optim``).
    """

    _hyper: dict[str, Any]
    _slots: Optional[_optim.ValueSlots]
    # array path: (params, grads, flat param views, flat grad views)
    _arrays: Any
    _n: int
    _step: int
    _state: dict[str, F64]
    _check: Callable[..., dict[str, Any]]     # set by each subclass
    _update: Callable[[], None]               # set by each subclass

    def __init__(self, params: Iterable[Value], **hyper: Any) -> None:
        name = type(self).__name__
        self._hyper = self._check(**hyper)
        self._slots = _value_params(name, params)
        self._arrays = None
        self._init_state(len(self._slots))

    @classmethod
    def from_arrays(cls: type[_Opt], params: Iterable[F64], grads: Iterable[F64],
                    *args: Any, **kwargs: Any) -> _Opt:
        """An optimizer over float64 arrays, updated in place.

        Parameters
        ----------
        params : list of numpy.ndarray
            Parameter arrays: float64, C-contiguous, writeable, any shape,
            no two sharing memory.
        grads : list of numpy.ndarray
            One float64 C-contiguous gradient array per parameter, same shape.
            ``step()`` reads them as they are when it is called: write new
            gradients into these arrays.
        *args, **kwargs
            The optimizer's hyper-parameters (``lr``, ...).

        Examples
        --------
        >>> import numpy as np
        >>> from fastgrad.optim import SGD
        >>> w, dw = np.array([1.0, 2.0]), np.array([0.5, -1.0])
        >>> opt = SGD.from_arrays([w], [dw], lr=0.1)
        >>> opt.step()
        >>> w
        array([0.95, 2.1 ])
        """
        self = cls.__new__(cls)
        name = cls.__name__
        # bind the hyper-parameters exactly as __init__ would
        self._hyper = self._check(*args, **kwargs)
        params, grads, flat_p, flat_g = _array_params(name, params, grads)
        self._slots = None
        self._arrays = (params, grads, flat_p, flat_g)
        self._init_state(sum(p.size for p in params))
        return self

    # -- state ------------------------------------------------------------
    def _init_state(self, n: int) -> None:
        self._n = n
        self._step = 0
        self._state = {k: np.zeros(n) for k in self._state_names(self._hyper)}

    @staticmethod
    def _state_names(hyper: dict[str, Any]) -> tuple[str, ...]:
        return ()

    # -- public API -------------------------------------------------------
    @property
    def lr(self) -> float:
        """The learning rate; may be changed between steps."""
        return float(self._hyper["lr"])

    @lr.setter
    def lr(self, value: float) -> None:
        self._hyper["lr"] = _real(type(self).__name__, "lr", value, minimum=0.0)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """A copy of the hyper-parameters (dict)."""
        return dict(self._hyper)

    @property
    def params(self) -> Union[list[Value], list[F64]]:
        """The parameters: a list of Values, or of arrays (array path)."""
        return self._slots.values if self._slots is not None else list(self._arrays[0])

    @property
    def grads(self) -> Optional[list[F64]]:
        """The gradient arrays of the array path (None on the Value path)."""
        return None if self._arrays is None else list(self._arrays[1])

    @property
    def steps_taken(self) -> int:
        """Number of ``step()`` calls so far (restored by ``load_state_dict``)."""
        return self._step

    def zero_grad(self) -> None:
        """Set every gradient to 0 (``.grad`` of the Values, or the arrays)."""
        if self._slots is not None:
            self._slots.zero_grad()
            return
        for i, g in enumerate(self._arrays[3]):
            if not g.flags.writeable:
                raise ValueError(f"{type(self).__name__}.zero_grad: gradient "
                                 f"array {i} is read-only")
        for g in self._arrays[3]:
            g.fill(0.0)

    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """Update every parameter once from its current gradient.

        Parameters
        ----------
        closure : callable, optional
            Called first (e.g. to zero the gradients, compute the loss and run
            ``backward()``); its return value is returned, as in torch.optim.
        """
        loss = None if closure is None else closure()
        self._update()
        self._step += 1
        return loss

    def _layout(self) -> tuple[Any, ...]:
        if self._slots is not None:
            return ("values", self._n)
        return ("arrays", tuple(p.shape for p in self._arrays[0]))

    def state_dict(self) -> dict[str, Any]:
        """A snapshot to resume from: hyper-parameters, step count, state.

        The arrays are copies; ``load_state_dict`` on an optimizer over the
        same parameter layout continues bit-identically.  The dict holds
        only Python scalars, tuples and numpy arrays (picklable).

        Examples
        --------
        >>> from fastgrad import Value
        >>> from fastgrad.optim import Adam
        >>> x = Value(1.0); x.grad = 0.5
        >>> opt = Adam([x], lr=0.1)
        >>> opt.step()
        >>> saved = opt.state_dict()
        >>> resumed = Adam([x], lr=0.1)
        >>> resumed.load_state_dict(saved)
        >>> resumed.steps_taken, round(float(resumed.state_dict()["state"]["exp_avg"][0]), 12)
        (1, 0.05)
        """
        return {
            "optimizer": type(self).__name__,
            "hyperparameters": dict(self._hyper),
            "step": self._step,
            "layout": self._layout(),
            "state": {k: v.copy() for k, v in self._state.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a ``state_dict()`` (hyper-parameters, step count, state).

        Raises ValueError (and changes nothing) if the snapshot comes from
        another optimizer class or another parameter layout.
        """
        name = type(self).__name__
        if not isinstance(state_dict, dict):
            raise TypeError(f"{name}.load_state_dict: expected a dict, got "
                            f"{type(state_dict).__name__}")
        missing = {"optimizer", "hyperparameters", "step", "layout", "state"} - set(state_dict)
        if missing:
            raise ValueError(f"{name}.load_state_dict: missing keys {sorted(missing)}")
        if state_dict["optimizer"] != name:
            raise ValueError(f"{name}.load_state_dict: the state is from a "
                             f"{state_dict['optimizer']!r} optimizer")
        layout = state_dict["layout"]
        if tuple(layout) != self._layout():
            raise ValueError(f"{name}.load_state_dict: parameter layout "
                             f"{tuple(layout)!r} does not match this optimizer's "
                             f"{self._layout()!r}")
        saved = state_dict["hyperparameters"]
        if not isinstance(saved, dict) or set(saved) != set(self._hyper):
            raise ValueError(f"{name}.load_state_dict: hyper-parameters "
                             f"{sorted(saved) if isinstance(saved, dict) else saved!r} "
                             f"do not match {sorted(self._hyper)}")
        hyper = self._check(**saved)
        step = state_dict["step"]
        if (isinstance(step, bool) or not isinstance(step, numbers.Integral)
                or int(step) < 0):
            raise ValueError(f"{name}.load_state_dict: invalid step {step!r}")
        step = int(step)
        if step > _MAX_STEP:
            # Adam's bias corrections use float(step + 1): beyond 2**53 it is
            # no longer the step count, beyond ~1.8e308 every step() overflows
            raise ValueError(f"{name}.load_state_dict: step {step} is out of "
                             f"range (must be <= 2**53)")
        names = set(self._state_names(hyper))
        given = state_dict["state"]
        if not isinstance(given, dict) or set(given) != names:
            raise ValueError(f"{name}.load_state_dict: state entries "
                             f"{sorted(given) if isinstance(given, dict) else given!r} "
                             f"do not match the expected {sorted(names)}")
        state = {}
        for k in names:
            a = np.asarray(given[k])
            if a.dtype != np.float64 or a.shape != (self._n,):
                raise ValueError(f"{name}.load_state_dict: state {k!r} must be "
                                 f"float64 of shape ({self._n},), got "
                                 f"{a.dtype} {a.shape}")
            if k in _NONNEGATIVE_STATE and bool((a < 0).any()):
                # a second moment: sqrt of a negative would give nan parameters
                raise ValueError(f"{name}.load_state_dict: state {k!r} has "
                                 "negative entries (it is a running mean of "
                                 "squares)")
            state[k] = np.array(a, dtype=np.float64, order="C", copy=True)
        # everything checked: apply
        self._hyper = hyper
        self._step = int(step)
        self._state = state

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self._slots is not None:
            # the C pointer table is rebuilt on load; the Values themselves
            # pickle (pickled together with the model, they stay shared)
            state["_slots"] = list(self._slots.values)
            return state
        # the flat views are not pickled: numpy would unpickle them as
        # independent arrays; __setstate__ rebuilds them from the originals
        params, grads = self._arrays[:2]
        state["_arrays"] = (params, grads)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._slots is not None:
            self._slots = _optim.ValueSlots(cast("list[Value]", self._slots))  # a list when pickled
        if self._arrays is not None:
            params, grads = self._arrays[:2]
            self._arrays = (params, grads, [p.reshape(-1) for p in params],
                            [g.reshape(-1) for g in grads])

    def __repr__(self) -> str:
        kind = "Values" if self._slots is not None else "arrays"
        opts = ", ".join(f"{k}={v!r}" for k, v in self._hyper.items())
        return f"{type(self).__name__}({self._n} scalars in {kind}, {opts})"


class SGD(Optimizer):
    """Stochastic gradient descent, with ``torch.optim.SGD``'s update rule.

    For each parameter ``p`` with gradient ``g``::

        g = -g                       if maximize
        g = g + weight_decay * p     if weight_decay != 0
        if momentum != 0:
            b = g  (first step)  or  b = momentum * b + (1 - dampening) * g
            g = g + momentum * b     if nesterov, else g = b
        p = p - lr * g

    Parameters
    ----------
    params : iterable of Value
        The parameters (e.g. ``model.parameters()``), each once.  For numpy
        arrays use ``SGD.from_arrays(params, grads, ...)``.
    lr : float
        Learning rate (>= 0, finite); the ``lr`` attribute may be changed
        between steps.
    momentum, dampening, weight_decay : float, default 0
    nesterov, maximize : bool, default False

    Examples
    --------
    >>> from fastgrad import Value
    >>> from fastgrad.optim import SGD
    >>> x = Value(3.0)
    >>> opt = SGD([x], lr=0.25)
    >>> for _ in range(3):
    ...     opt.zero_grad()
    ...     loss = x * x
    ...     loss.backward()
    ...     opt.step()
    >>> x.data
    0.375
    """

    def __init__(self, params: Iterable[Value], lr: float, momentum: float = 0,
                 dampening: float = 0, weight_decay: float = 0, nesterov: bool = False,
                 maximize: bool = False) -> None:
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov,
                         maximize=maximize)

    @staticmethod
    def _check(lr: float, momentum: float = 0, dampening: float = 0,
               weight_decay: float = 0, nesterov: bool = False,
               maximize: bool = False) -> dict[str, Any]:
        h = {
            "lr": _real("SGD", "lr", lr, minimum=0.0),
            "momentum": _real("SGD", "momentum", momentum, minimum=0.0),
            "dampening": _real("SGD", "dampening", dampening),
            "weight_decay": _real("SGD", "weight_decay", weight_decay, minimum=0.0),
            "nesterov": _flag("SGD", "nesterov", nesterov),
            "maximize": _flag("SGD", "maximize", maximize),
        }
        if h["nesterov"] and (h["momentum"] <= 0 or h["dampening"] != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum and "
                             f"zero dampening (got momentum={h['momentum']}, "
                             f"dampening={h['dampening']})")
        return h

    @staticmethod
    def _state_names(hyper: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if hyper["momentum"] != 0 else ()

    def _update(self) -> None:
        h = self._hyper
        buf = self._state.get("momentum_buffer")
        if h["momentum"] != 0 and buf is None:
            raise RuntimeError("SGD: momentum buffer missing")  # unreachable
        args = (buf, h["lr"], h["momentum"], h["dampening"], h["weight_decay"],
                h["nesterov"], h["maximize"], self._step == 0)
        if self._slots is not None:
            self._slots.sgd(*args)
        else:
            _optim.sgd_arrays(self._arrays[2], self._arrays[3], *args)


class Adam(Optimizer):
    """Adam, with ``torch.optim.Adam``'s bias-corrected update rule.

    At step ``t`` (from 1), for each parameter ``p`` with gradient ``g``::

        g = -g                            if maximize
        g = g + weight_decay * p          if weight_decay != 0
        m = m + (1 - beta1) * (g - m)     (torch's lerp)
        v = beta2 * v + (1 - beta2) * g * g
        vmax = max(vmax, v)               if amsgrad (then used instead of v)
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    Parameters
    ----------
    params : iterable of Value
        The parameters, each once (arrays: ``Adam.from_arrays``).
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
        Each in [0, 1).
    eps : float, default 1e-8
    weight_decay : float, default 0
        L2 penalty added to the gradient (not AdamW's decoupled decay).
    amsgrad, maximize : bool, default False

    Examples
    --------
    >>> from fastgrad import Value
    >>> from fastgrad.optim import Adam
    >>> x = Value(1.0)
    >>> opt = Adam([x], lr=0.1)
    >>> (x * x).backward(); opt.step()
    >>> round(x.data, 6)     # the first Adam step moves by about lr
    0.9
    """

    def __init__(self, params: Iterable[Value], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize)

    @staticmethod
    def _check(lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
               eps: float = 1e-8, weight_decay: float = 0, amsgrad: bool = False,
               maximize: bool = False) -> dict[str, Any]:
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise TypeError(f"Adam: betas must be a pair of floats, got {betas!r}") from None
        return {
            "lr": _real("Adam", "lr", lr, minimum=0.0),
            "betas": (_real("Adam", "betas[0]", b1, minimum=0.0, below=1.0),
                      _real("Adam", "betas[1]", b2, minimum=0.0, below=1.0)),
            "eps": _real("Adam", "eps", eps, minimum=0.0),
            "weight_decay": _real("Adam", "weight_decay", weight_decay, minimum=0.0),
            "amsgrad": _flag("Adam", "amsgrad", amsgrad),
            "maximize": _flag("Adam", "maximize", maximize),
        }

    @staticmethod
    def _state_names(hyper: dict[str, Any]) -> tuple[str, ...]:
        names = ("exp_avg", "exp_avg_sq")
        return names + ("max_exp_avg_sq",) if hyper["amsgrad"] else names

    def _update(self) -> None:
        h = self._hyper
        beta1, beta2 = h["betas"]
        # per-step scalars, computed in Python exactly as torch does (its step
        # count is a float tensor: t as a float)
        t = float(self._step + 1)
        bias_correction1 = 1 - beta1 ** t
        bias_correction2 = 1 - beta2 ** t
        step_size = h["lr"] / bias_correction1
        bias_correction2_sqrt = bias_correction2 ** 0.5
        s = self._state
        args = (s["exp_avg"], s["exp_avg_sq"], s.get("max_exp_avg_sq"),
                beta1, beta2, h["eps"], h["weight_decay"], h["amsgrad"],
                h["maximize"], step_size, bias_correction2_sqrt)
        if self._slots is not None:
            self._slots.adam(*args)
        else:
            _optim.adam_arrays(self._arrays[2], self._arrays[3], *args)


# ---------------------------------------------------------------------------
# learning-rate sweep
# ---------------------------------------------------------------------------

class LRSweepResult:
    """Outcome of ``lr_sweep``.

    Attributes
    ----------
    lrs : numpy.ndarray, shape (R,)
        The learning rates tried, in the order given.
    losses : numpy.ndarray, shape (R, steps + 1)
        ``losses[r, k]`` is the loss before update ``k`` (the last column:
        after the final update).  A run whose loss becomes non-finite (or
        whose loss computation raises an ArithmeticError such as
        OverflowError) is stopped: that entry is inf (or the non-finite
        value) and the rest of its row NaN.
    final : numpy.ndarray, shape (R,)
        The last loss of each run (``inf`` for a diverged run).
    val_losses : numpy.ndarray, shape (R,), or None
        ``eval_fn(model)`` after each run (``inf`` for a diverged run), when
        ``lr_sweep`` was given an ``eval_fn``.
    best_lr : float or None
        The rate with the lowest ``val_losses`` if there are any, else the
        lowest ``final`` loss (the first one on ties); None if every run
        diverged.
    """

    def __init__(self, lrs: Sequence[float], losses: F64,
                 val_losses: Optional[F64] = None) -> None:
        self.lrs = np.asarray(lrs, dtype=float)
        self.losses = np.asarray(losses, dtype=float)
        last = self.losses[:, -1]
        self.final = np.where(np.isfinite(last), last, np.inf)
        self.val_losses = None
        score = self.final
        if val_losses is not None:
            v = np.asarray(val_losses, dtype=float)
            self.val_losses = np.where(np.isfinite(v) & np.isfinite(self.final), v, np.inf)
            score = self.val_losses
        if np.all(np.isinf(score)):
            self.best_lr = None
        else:
            self.best_lr = float(self.lrs[int(np.argmin(score))])

    def __repr__(self) -> str:
        rows = []
        for r, (lr, f) in enumerate(zip(self.lrs, self.final)):
            row = f"  lr={lr:<10.3g} final loss={f:.6g}"
            if self.val_losses is not None:
                row += f"  validation={self.val_losses[r]:.6g}"
            rows.append(row)
        return "LRSweepResult(best_lr={!r},\n{})".format(self.best_lr, "\n".join(rows))


def _parameters_of(model: Any, where: str) -> list[Value]:
    params = model.parameters() if hasattr(model, "parameters") else model
    try:
        return list(params)
    except TypeError:
        raise TypeError(f"{where}: the model factory must return a Module (with "
                        f".parameters()) or a list of Values, got "
                        f"{type(model).__name__}") from None


def lr_sweep(model_factory: Callable[[], Any], loss_fn: Callable[[Any], Value],
             lrs: Optional[Iterable[float]] = None, steps: int = 10,
             optimizer: type[Optimizer] = SGD,
             eval_fn: Optional[Callable[[Any], Union[Value, float]]] = None,
             executor: Optional[Executor] = None, progress: Optional[bool] = None,
             **optimizer_kwargs: Any) -> LRSweepResult:
    """Train a few steps per learning rate from the same start; pick the best.

    The lecture's "validate the learning rate": for every rate, a fresh model
    from ``model_factory()`` gets the *initial weights of the first model*
    (so every rate starts from the same point even if the factory is random),
    then ``steps`` updates of ``optimizer(model.parameters(), lr=rate,
    **optimizer_kwargs)`` with ``loss_fn(model)``.

    Parameters
    ----------
    model_factory : callable
        ``model_factory()`` returns a ``fastgrad.nn.Module`` or a list of
        Values; every call must give the same number of parameters.
    loss_fn : callable
        ``loss_fn(model)`` returns a scalar ``Value`` (a full-batch loss, or a
        mini-batch drawn from a generator it seeds itself, so that every rate
        sees the same batches).
    lrs : sequence of float, optional
        Rates to try; default ``numpy.logspace(-4, 1, 11)`` (1e-4 ... 10).
    steps : int, default 10
        Updates per rate (>= 1).
    optimizer : optimizer class, default SGD
    eval_fn : callable, optional
        ``eval_fn(model)`` returns a Value or a number after the run, e.g. the
        loss on held-out data (cs231n's validation); the best rate is then the
        one with the lowest ``eval_fn``.  Default: rank by the last training
        loss.
    executor : concurrent.futures.Executor, optional
        Run one task per rate there (a ``ProcessPoolExecutor``, Dask's
        ``Client.get_executor()``, ...; see ``fastgrad.sweep``): the same
        numbers as the serial run, bit for bit, when ``loss_fn`` seeds its
        own randomness.  A rate whose run raises (other than an
        ArithmeticError, which counts as diverged) does not stop the others:
        ``fastgrad.distributed.SweepError`` is raised at the end, carrying
        the other rates' ``LRSweepResult`` and each failure's traceback.
    progress : bool, optional
        With an executor: a tqdm bar counting finished rates (default: shown
        when tqdm is installed).
    **optimizer_kwargs
        Passed to the optimizer (``momentum=0.9``, ``betas=...``, ...).

    Returns
    -------
    LRSweepResult

    Examples
    --------
    >>> from fastgrad import Value
    >>> from fastgrad.optim import lr_sweep
    >>> res = lr_sweep(lambda: [Value(2.0)], lambda ps: ps[0] * ps[0],
    ...                lrs=[0.01, 0.1, 0.5, 1.5], steps=5)
    >>> res.best_lr
    0.5
    """
    if not callable(model_factory):
        raise TypeError("lr_sweep: model_factory must be callable, got "
                        f"{type(model_factory).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"lr_sweep: loss_fn must be callable, got {type(loss_fn).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"lr_sweep: steps must be an int >= 1, got {steps!r}")
    if not (isinstance(optimizer, type) and issubclass(optimizer, Optimizer)):
        raise TypeError(f"lr_sweep: optimizer must be a fastgrad optimizer class "
                        f"(SGD, Adam), got {optimizer!r}")
    if lrs is None:
        lrs = np.logspace(-4, 1, 11)
    lrs = [_real("lr_sweep", "lr", lr, minimum=0.0) for lr in np.atleast_1d(lrs).tolist()]
    if not lrs:
        raise ValueError("lr_sweep: lrs is empty")

    if eval_fn is not None and not callable(eval_fn):
        raise TypeError(f"lr_sweep: eval_fn must be callable, got {type(eval_fn).__name__}")
    if executor is not None:
        return _lr_sweep_on(executor, model_factory, loss_fn, lrs, steps, optimizer,
                            eval_fn, optimizer_kwargs, progress, retries=1)
    start = None
    losses = np.full((len(lrs), steps + 1), np.nan)
    val = None if eval_fn is None else np.full(len(lrs), np.nan)
    for r, lr in enumerate(lrs):
        model = model_factory()
        params = _parameters_of(model, "lr_sweep")
        opt = optimizer(params, lr=lr, **optimizer_kwargs)
        if start is None:
            start = np.empty(len(params))
            opt._slots.get_data(start)
        elif len(params) != len(start):
            raise ValueError(f"lr_sweep: model_factory returned {len(params)} "
                             f"parameters, but {len(start)} the first time")
        else:
            opt._slots.set_data(start)
        for k in range(steps + 1):
            opt.zero_grad()
            try:
                loss = loss_fn(model)
            except ArithmeticError:      # e.g. OverflowError: the run diverged
                losses[r, k] = math.inf
                break
            if not isinstance(loss, Value):
                raise TypeError(f"lr_sweep: loss_fn must return a Value, got "
                                f"{type(loss).__name__}")
            losses[r, k] = loss.data
            if not math.isfinite(loss.data) or k == steps:
                break
            try:
                loss.backward()
            except ArithmeticError:
                losses[r, k + 1] = math.inf
                break
            opt.step()
        if eval_fn is not None:
            if not math.isfinite(losses[r, -1]):
                val[r] = math.inf
                continue
            try:
                v = eval_fn(model)
            except ArithmeticError:
                v = math.inf
            if isinstance(v, Value):
                v = v.data
            elif isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)):
                v = float(v)
            else:
                raise TypeError("lr_sweep: eval_fn must return a Value or a "
                                f"number, got {type(v).__name__}")
            val[r] = v
    return LRSweepResult(lrs, losses, val)


# ---------------------------------------------------------------------------
# lr_sweep on an executor: one task per rate (fastgrad._tasks runs them)
# ---------------------------------------------------------------------------

class _StartFrom:
    """A model factory whose models start from given weights."""

    def __init__(self, factory: Callable[[], Any], start: F64) -> None:
        self.factory = factory
        self.start = start

    def __call__(self) -> Any:
        model = self.factory()
        params = _parameters_of(model, "lr_sweep")
        if len(params) != len(self.start):
            raise ValueError(f"lr_sweep: model_factory returned {len(params)} "
                             f"parameters, but {len(self.start)} the first time")
        _optim.ValueSlots(params).set_data(self.start)
        return model


class _LRRun:
    """One rate of an lr_sweep, run by the serial ``lr_sweep`` itself."""

    def __init__(self, factory: _StartFrom, loss_fn: Callable[[Any], Any], steps: int,
                 optimizer: Any, eval_fn: Optional[Callable[[Any], Any]],
                 optimizer_kwargs: dict[str, Any]) -> None:
        self.factory = factory
        self.loss_fn = loss_fn
        self.steps = steps
        self.optimizer = optimizer
        self.eval_fn = eval_fn
        self.optimizer_kwargs = optimizer_kwargs

    def __call__(self, lr: float) -> tuple[F64, Optional[float]]:
        r = lr_sweep(self.factory, self.loss_fn, lrs=[lr], steps=self.steps,
                     optimizer=self.optimizer, eval_fn=self.eval_fn,
                     **self.optimizer_kwargs)
        val = None if r.val_losses is None else float(r.val_losses[0])
        return r.losses[0], val


def _lr_sweep_on(executor: Executor, model_factory: Callable[[], Any],
                 loss_fn: Callable[[Any], Any], lrs: list[float], steps: int,
                 optimizer: Any, eval_fn: Optional[Callable[[Any], Any]],
                 optimizer_kwargs: dict[str, Any], progress: Optional[bool],
                 retries: int) -> LRSweepResult:
    """``lr_sweep`` with one task per rate, on ``executor``."""
    # the task machinery under fastgrad.distributed.sweep, which imports
    # nothing of the library (optim sits below fastgrad.distributed)
    from fastgrad import _tasks
    where = "lr_sweep"
    checked = _tasks.check_executor(executor, where)
    retries = _tasks.check_retries(retries, where)
    # the first model's weights are every run's start, as in the serial sweep
    params = _parameters_of(model_factory(), where)
    start = np.empty(len(params))
    _optim.ValueSlots(params).get_data(start)
    run = _LRRun(_StartFrom(model_factory, start), loss_fn, steps, optimizer,
                 eval_fn, dict(optimizer_kwargs))
    configs: list[dict[str, Any]] = [{"lr": lr} for lr in lrs]
    res = _tasks.run_all(run, configs, checked, progress, retries, where)
    ok = [i for i in range(len(lrs)) if res.results[i] is not None]
    losses = np.full((len(ok), steps + 1), np.nan)
    val = None if eval_fn is None else np.full(len(ok), np.nan)
    for row, i in enumerate(ok):
        losses[row] = res.results[i][0]
        if val is not None:
            val[row] = res.results[i][1]
    out = LRSweepResult([lrs[i] for i in ok], losses.reshape(len(ok), steps + 1), val)
    if res.failures:
        raise _tasks.SweepError(out, res.failures)
    return out
