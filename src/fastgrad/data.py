"""Mini-batches of ``(X, y)`` numpy arrays.

``iterate_minibatches`` walks one epoch in shuffled batches (the lecture's
default batch size, 256); ``sample_batch`` draws a single random batch (the
lecture's ``sample_data(training_data, 256)``).  Randomness comes from a
``numpy.random.Generator`` you pass (or an int seed), never from global state.
"""
import numbers
from typing import Any, Iterator, Optional, Union, cast

import numpy as np
import numpy.typing as npt

# an int seed or a Generator (None: fresh OS entropy)
Seed = Union[None, int, np.random.Generator]

__all__ = ["iterate_minibatches", "sample_batch", "MiniBatches"]


def _generator(rng: Seed, where: str) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (bool, np.bool_)) or not isinstance(rng, numbers.Integral):
        raise TypeError(f"{where}: rng must be None, an int seed or a "
                        f"numpy.random.Generator, got {type(rng).__name__}")
    if rng < 0:
        raise ValueError(f"{where}: a seed must be >= 0, got {rng}")
    return np.random.default_rng(int(rng))


def _check_xy(X: npt.ArrayLike, y: npt.ArrayLike,
              where: str) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim == 0 or y.ndim == 0:
        raise ValueError(f"{where}: X and y must have a sample axis, got shapes "
                         f"{X.shape} and {y.shape}")
    if len(X) != len(y):
        raise ValueError(f"{where}: X has {len(X)} samples but y has {len(y)}")
    if len(X) == 0:
        raise ValueError(f"{where}: X and y are empty")
    return X, y


def _check_batch_size(batch_size: int, where: str) -> int:
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, numbers.Integral):
        raise TypeError(f"{where}: batch_size must be an int, got "
                        f"{type(batch_size).__name__} {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"{where}: batch_size must be >= 1, got {batch_size}")
    return int(batch_size)


class MiniBatches:
    """One epoch of mini-batches; iterate it, ``len()`` gives the batch count.

    Made by ``iterate_minibatches``; the permutation is drawn when iteration
    starts, so every ``for`` loop over the same object is a new epoch.
    """

    def __init__(self, X: npt.NDArray[Any], y: npt.NDArray[Any], batch_size: int,
                 shuffle: bool, drop_last: bool,
                 rng: Optional[np.random.Generator]) -> None:
        self._X, self._y = X, y
        self._bs, self._shuffle, self._drop_last = batch_size, shuffle, drop_last
        self._rng = rng

    def __len__(self) -> int:
        n = len(self._X)
        return n // self._bs if self._drop_last else -(-n // self._bs)

    def __iter__(self) -> Iterator[tuple[npt.NDArray[Any], npt.NDArray[Any]]]:
        X, y, bs = self._X, self._y, self._bs
        n = len(X)
        stop = n - n % bs if self._drop_last else n
        if self._shuffle:
            order = cast(np.random.Generator, self._rng).permutation(n)
            for start in range(0, stop, bs):
                idx = order[start:start + bs]
                yield X[idx], y[idx]
        else:
            for start in range(0, stop, bs):
                yield X[start:start + bs], y[start:start + bs]


def iterate_minibatches(X: npt.ArrayLike, y: npt.ArrayLike, batch_size: int = 256,
                        shuffle: bool = True, drop_last: bool = False,
                        rng: Seed = None) -> MiniBatches:
    """Split ``(X, y)`` into mini-batches covering every sample once.

    Parameters
    ----------
    X, y : array_like
        Samples along the first axis; same length (>= 1).
    batch_size : int, default 256
        Samples per batch (>= 1).  A batch size above the number of samples
        gives one batch (or none with ``drop_last``).
    shuffle : bool, default True
        Visit samples in a random order (a new permutation per epoch).  Off,
        batches are consecutive slices (views of X and y).
    drop_last : bool, default False
        Drop the last batch if it is smaller than ``batch_size``.
    rng : numpy.random.Generator or int, optional
        Source of the shuffling; an int seeds a new Generator (reproducible),
        None uses fresh OS entropy.

    Returns
    -------
    MiniBatches
        Iterable of ``(X_batch, y_batch)``; ``len()`` is the number of batches.

    Examples
    --------
    >>> import numpy as np
    >>> from fastgrad.data import iterate_minibatches
    >>> X, y = np.arange(10).reshape(5, 2), np.arange(5)
    >>> [yb.tolist() for _, yb in iterate_minibatches(X, y, 2, shuffle=False)]
    [[0, 1], [2, 3], [4]]
    >>> batches = iterate_minibatches(X, y, 2, drop_last=True, rng=0)
    >>> len(batches), [len(yb) for _, yb in batches]
    (2, [2, 2])
    """
    where = "iterate_minibatches"
    X, y = _check_xy(X, y, where)
    batch_size = _check_batch_size(batch_size, where)
    for name, flag in (("shuffle", shuffle), ("drop_last", drop_last)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{where}: {name} must be a bool, got "
                            f"{type(flag).__name__} {flag!r}")
    gen = _generator(rng, where) if shuffle else None
    return MiniBatches(X, y, batch_size, bool(shuffle), bool(drop_last), gen)


def sample_batch(X: npt.ArrayLike, y: npt.ArrayLike, batch_size: int,
                 rng: Seed = None) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Draw one mini-batch of distinct samples at random.

    The lecture's ``sample_data(training_data, 256)``: ``batch_size`` rows of
    ``X`` and the matching entries of ``y``, without replacement.

    Parameters
    ----------
    X, y : array_like
        Samples along the first axis; same length.
    batch_size : int
        1 <= batch_size <= len(X).
    rng : numpy.random.Generator or int, optional
        Source of randomness (an int seeds a new Generator).

    Returns
    -------
    (X_batch, y_batch) : tuple of numpy.ndarray

    Examples
    --------
    >>> import numpy as np
    >>> from fastgrad.data import sample_batch
    >>> X, y = np.arange(20.0).reshape(10, 2), np.arange(10)
    >>> Xb, yb = sample_batch(X, y, 4, rng=np.random.default_rng(0))
    >>> Xb.shape, yb.shape, bool(np.all(Xb[:, 0] == 2 * yb))
    ((4, 2), (4,), True)
    """
    where = "sample_batch"
    X, y = _check_xy(X, y, where)
    batch_size = _check_batch_size(batch_size, where)
    if batch_size > len(X):
        raise ValueError(f"{where}: batch_size {batch_size} is larger than the "
                         f"{len(X)} samples")
    idx = _generator(rng, where).choice(len(X), size=batch_size, replace=False)
    return X[idx], y[idx]
