"""The optimizer kernels of ``fastgrad._optim`` in NumPy (pure-Python build).

Used by ``fastgrad.optim`` when the compiled extension is absent (see
``fastgrad._backend``).  Same functions, same arguments, same formulas in the
same operation order as the C kernels (``sgd_update``/``adam_update`` in
``_optim.pyx``); every operation is an elementwise float64 NumPy ufunc, which
rounds each operation as the C code does (the C build is compiled without
fused multiply-add), so both builds give bit-identical parameters.

The Value path gathers ``.data``/``.grad`` of the Values into arrays, runs the
array formula and writes ``.data`` back.
"""
from typing import Iterable, List, Optional, Tuple

import numpy as np
import numpy.typing as npt

__all__ = ["ValueSlots", "sgd_array", "adam_array", "sgd_arrays", "adam_arrays"]

F64 = npt.NDArray[np.float64]


def _sgd(p: F64, g: F64, buf: Optional[F64], lr: float, momentum: float,
         dampening: float, weight_decay: float, nesterov: bool, maximize: bool,
         first: bool) -> None:
    """torch.optim.SGD's single-tensor rule on flat arrays; p and buf in place."""
    if maximize:
        g = -g
    if weight_decay != 0.0:
        g = g + weight_decay * p
    if momentum != 0.0:
        if buf is None:
            raise ValueError(f"optimizer kernel: momentum buffer must have length "
                             f"{p.shape[0]}, got None")
        if first:
            buf[...] = g
        else:
            buf[...] = buf * momentum + (1.0 - dampening) * g
        g = g + momentum * buf if nesterov else buf
    p += -lr * g


def _adam(p: F64, g: F64, m: F64, v: F64, vmax: Optional[F64], beta1: float,
          beta2: float, eps: float, weight_decay: float, amsgrad: bool,
          maximize: bool, step_size: float, bc2_sqrt: float) -> None:
    """torch.optim.Adam's single-tensor rule on flat arrays; p, m, v, vmax in place."""
    if maximize:
        g = -g
    if weight_decay != 0.0:
        g = g + weight_decay * p
    w = 1.0 - beta1
    # ATen's two-branch lerp, as the C kernel
    if abs(w) < 0.5:
        m[...] = m + w * (g - m)
    else:
        m[...] = g - (g - m) * (1.0 - w)
    v[...] = v * beta2 + (1.0 - beta2) * g * g
    if amsgrad:
        if vmax is None:
            raise ValueError(f"optimizer kernel: max_exp_avg_sq must have length "
                             f"{p.shape[0]}, got None")
        # torch.maximum: a NaN in either operand propagates
        nan = np.isnan(vmax) | np.isnan(v)
        vmax[...] = np.where(nan, vmax + v, np.where(vmax > v, vmax, v))
        denom = np.sqrt(vmax) / bc2_sqrt + eps
    else:
        denom = np.sqrt(v) / bc2_sqrt + eps
    p += -step_size * m / denom


def _check_state(a: Optional[F64], n: int, needed: bool, what: str) -> None:
    if needed and (a is None or a.shape[0] != n):
        raise ValueError(f"optimizer kernel: {what} must have length {n}, got "
                         f"{None if a is None else a.shape[0]}")


def _pair(p: F64, g: F64, k: int) -> None:
    if p.shape[0] != g.shape[0]:
        raise ValueError(f"optimizer kernel: parameter array {k} has {p.shape[0]} "
                         f"elements but its gradient has {g.shape[0]}")


class ValueSlots:
    """The parameters of an optimizer: a list of distinct Values."""

    def __init__(self, params: Iterable[object]) -> None:
        from fastgrad.engine import Value
        values = list(params)
        seen = set()
        for i, v in enumerate(values):
            if not isinstance(v, Value):
                raise TypeError(f"optimizer: parameter {i} is a {type(v).__name__}, "
                                "not a fastgrad Value")
            if id(v) in seen:
                raise ValueError(f"optimizer: parameter {i} appears more than once "
                                 "in the parameter list")
            seen.add(id(v))
        self._keep: List[object] = values
        self.n = len(values)

    def __len__(self) -> int:
        return self.n

    def __reduce__(self) -> Tuple[object, ...]:
        return (ValueSlots, (self._keep,))

    @property
    def values(self) -> List[object]:
        """A new list of the Values (in order)."""
        return list(self._keep)

    def zero_grad(self) -> None:
        """Set ``grad = 0.0`` on every Value."""
        for v in self._keep:
            v.grad = 0.0  # type: ignore[attr-defined]

    def get_data(self, out: F64) -> None:
        """Copy every Value's ``data`` into ``out`` (length n)."""
        self._check_len(out.shape[0], "get_data: out")
        out[...] = [v.data for v in self._keep]  # type: ignore[attr-defined]

    def get_grad(self, out: F64) -> None:
        """Copy every Value's ``grad`` into ``out`` (length n)."""
        self._check_len(out.shape[0], "get_grad: out")
        out[...] = [v.grad for v in self._keep]  # type: ignore[attr-defined]

    def set_data(self, src: F64) -> None:
        """Set every Value's ``data`` from ``src`` (length n)."""
        self._check_len(src.shape[0], "set_data: src")
        for v, x in zip(self._keep, src.tolist()):
            v.data = x  # type: ignore[attr-defined]

    def _check_len(self, got: int, what: str) -> None:
        if got != self.n:
            raise ValueError(f"ValueSlots.{what} must have length {self.n}, got {got}")

    def _arrays(self) -> Tuple[F64, F64]:
        p = np.array([v.data for v in self._keep], dtype=np.float64)  # type: ignore[attr-defined]
        g = np.array([v.grad for v in self._keep], dtype=np.float64)  # type: ignore[attr-defined]
        return p, g

    def sgd(self, buf: Optional[F64], lr: float, momentum: float, dampening: float,
            weight_decay: float, nesterov: bool, maximize: bool, first: bool) -> None:
        """One SGD step on the Values; ``buf`` is the momentum buffer."""
        _check_state(buf, self.n, momentum != 0.0, "momentum buffer")
        p, g = self._arrays()
        _sgd(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, maximize,
             first)
        self.set_data(p)

    def adam(self, m: F64, v: F64, vmax: Optional[F64], beta1: float, beta2: float,
             eps: float, weight_decay: float, amsgrad: bool, maximize: bool,
             step_size: float, bc2_sqrt: float) -> None:
        """One Adam step on the Values; ``m``, ``v``, ``vmax`` are the moments."""
        _check_state(m, self.n, True, "exp_avg")
        _check_state(v, self.n, True, "exp_avg_sq")
        _check_state(vmax, self.n, amsgrad, "max_exp_avg_sq")
        p, g = self._arrays()
        _adam(p, g, m, v, vmax, beta1, beta2, eps, weight_decay, amsgrad, maximize,
              step_size, bc2_sqrt)
        self.set_data(p)


def sgd_array(param: F64, grad: F64, buf: Optional[F64], lr: float,
              momentum: float = 0.0, dampening: float = 0.0,
              weight_decay: float = 0.0, nesterov: bool = False,
              maximize: bool = False, first: bool = True) -> None:
    """One SGD step on a flat float64 array, in place (torch.optim.SGD rule)."""
    _pair(param, grad, 0)
    _check_state(buf, param.shape[0], momentum != 0.0, "momentum buffer")
    _sgd(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov,
         maximize, first)


def adam_array(param: F64, grad: F64, exp_avg: F64, exp_avg_sq: F64,
               max_exp_avg_sq: Optional[F64], beta1: float, beta2: float,
               eps: float, weight_decay: float, amsgrad: bool, maximize: bool,
               step_size: float, bc2_sqrt: float) -> None:
    """One Adam step on a flat float64 array, in place (torch.optim.Adam rule)."""
    n = param.shape[0]
    _pair(param, grad, 0)
    _check_state(exp_avg, n, True, "exp_avg")
    _check_state(exp_avg_sq, n, True, "exp_avg_sq")
    _check_state(max_exp_avg_sq, n, amsgrad, "max_exp_avg_sq")
    _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, eps,
          weight_decay, amsgrad, maximize, step_size, bc2_sqrt)


def _offsets(params: List[F64], grads: List[F64], name: str) -> List[int]:
    if len(params) != len(grads):
        raise ValueError(f"{name}: {len(params)} parameter arrays but "
                         f"{len(grads)} gradient arrays")
    offs = [0]
    for k, (p, g) in enumerate(zip(params, grads)):
        _pair(p, g, k)
        offs.append(offs[-1] + p.shape[0])
    return offs


def sgd_arrays(params: List[F64], grads: List[F64], buf: Optional[F64], lr: float,
               momentum: float, dampening: float, weight_decay: float,
               nesterov: bool, maximize: bool, first: bool) -> None:
    """SGD step over several flat arrays; ``buf`` is their concatenated state."""
    offs = _offsets(params, grads, "sgd_arrays")
    _check_state(buf, offs[-1], momentum != 0.0, "momentum buffer")
    for k, (p, g) in enumerate(zip(params, grads)):
        b = None if buf is None or momentum == 0.0 else buf[offs[k]:offs[k + 1]]
        _sgd(p, g, b, lr, momentum, dampening, weight_decay, nesterov, maximize,
             first)


def adam_arrays(params: List[F64], grads: List[F64], exp_avg: F64, exp_avg_sq: F64,
                max_exp_avg_sq: Optional[F64], beta1: float, beta2: float,
                eps: float, weight_decay: float, amsgrad: bool, maximize: bool,
                step_size: float, bc2_sqrt: float) -> None:
    """Adam step over several flat arrays; the moments are concatenated."""
    offs = _offsets(params, grads, "adam_arrays")
    n = offs[-1]
    _check_state(exp_avg, n, True, "exp_avg")
    _check_state(exp_avg_sq, n, True, "exp_avg_sq")
    _check_state(max_exp_avg_sq, n, amsgrad, "max_exp_avg_sq")
    for k, (p, g) in enumerate(zip(params, grads)):
        s = slice(offs[k], offs[k + 1])
        vmax = max_exp_avg_sq[s] if amsgrad and max_exp_avg_sq is not None else None
        _adam(p, g, exp_avg[s], exp_avg_sq[s], vmax, beta1, beta2, eps,
              weight_decay, amsgrad, maximize, step_size, bc2_sqrt)
