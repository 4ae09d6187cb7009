"""Shared by the SGD-step tests (test_replay_fused_params, test_param_epoch):
a two-class data set and the bytes of float arrays, for bit-for-bit
comparisons."""
import numpy as np


def moons(n, seed=0):
    """n points in the plane, labelled +-1 by the sign of x0 * x1."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    y = np.where(X[:, 0] * X[:, 1] > 0, 1.0, -1.0)
    return X, y


def bits(*arrs):
    """The float64 bytes of each array (None skipped), joined."""
    return b"".join(np.asarray(a, np.float64).tobytes() for a in arrs
                    if a is not None)
