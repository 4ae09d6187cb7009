"""Type stubs for the compiled fastgrad._replay module."""
from typing import Any, Literal, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from fastgrad._engine import Value

ArrayLike = npt.ArrayLike
Inputs = Union[ArrayLike, tuple[ArrayLike, ...]]

class Program:
    n_inputs: int
    n_outputs: int
    n_params: int
    @property
    def params(self) -> tuple[Value, ...]: ...
    @property
    def n_instructions(self) -> int: ...
    @property
    def has_penalty(self) -> bool: ...
    def tape(self) -> dict[str, Any]: ...
    def __call__(self, x: ArrayLike) -> Union[float, npt.NDArray[np.float64]]: ...
    def forward(self, x: ArrayLike) -> Union[float, npt.NDArray[np.float64]]: ...
    def value_and_grad(
        self, x: ArrayLike, accumulate: bool = ...,
        param_grad: Optional[npt.NDArray[np.float64]] = ...,
    ) -> tuple[float, npt.NDArray[np.float64]]: ...
    def batch(
        self, inputs: Inputs, reduce: Literal["mean", "sum"] = ..., grad: bool = ...,
        outputs: Optional[npt.NDArray[np.float64]] = ...,
        param_grad: Optional[npt.NDArray[np.float64]] = ...,
        input_grad: Optional[npt.NDArray[np.float64]] = ...,
        accumulate: bool = ...,
    ) -> float: ...
    def predict(self, inputs: Inputs,
                out: Optional[npt.NDArray[np.float64]] = ...) -> npt.NDArray[np.float64]: ...
    def sgd_step(self, inputs: Inputs, lr: float, reduce: Literal["mean", "sum"] = ...,
                 outputs: Optional[npt.NDArray[np.float64]] = ...) -> float: ...
    def eval_params(self, theta: ArrayLike, x: ArrayLike) -> float: ...
    def param_values(self) -> npt.NDArray[np.float64]: ...

def build(outputs: Sequence[Value], inputs: Sequence[Value], params: Sequence[Value],
          penalty: Optional[Value] = ...) -> Program: ...
