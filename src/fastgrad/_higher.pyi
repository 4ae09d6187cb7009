"""Type stubs for the compiled fastgrad._higher module."""
from typing import Any, Optional, Union, final

import numpy as np
import numpy.typing as npt

from fastgrad._engine import Value

def grad_sweep(outputs: list[Value], seeds: list[Any], inputs: list[Value],
               create_graph: bool) -> list[Optional[Union[float, Value]]]: ...
def hvp_sweep(y: Value, inputs: list[Value], v: npt.NDArray[np.float64]
              ) -> tuple[list[Optional[float]], list[Optional[float]]]: ...

@final
class _PartialGraph:
    def __len__(self) -> int: ...
    def __reduce__(self) -> tuple[type[_PartialGraph], tuple[()]]: ...

def _set_hand_over(on: bool) -> bool: ...
