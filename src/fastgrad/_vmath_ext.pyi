"""Type stubs for the compiled fastgrad._vmath_ext module."""
from typing import Optional

import numpy as np
import numpy.typing as npt

FUNCTIONS: tuple[str, ...]
ISAS: tuple[str, ...]

def supported() -> list[str]: ...
def evaluate(name: str, x: npt.ArrayLike, isa: str = ...,
             out: Optional[npt.NDArray[np.float64]] = ...) -> npt.NDArray[np.float64]: ...
def user_sigmoid(
    z: npt.ArrayLike, isa: str = ..., g: Optional[npt.ArrayLike] = ..., keep: str = ...,
    c0: float = ..., c2: float = ..., c3: float = ...,
) -> tuple[npt.NDArray[np.float64], ...]: ...
def scalar(name: str, x: float) -> float: ...
def libm(name: str, x: npt.ArrayLike,
         out: Optional[npt.NDArray[np.float64]] = ...) -> npt.NDArray[np.float64]: ...
def tables() -> tuple[list[float], list[float], dict[str, float]]: ...
