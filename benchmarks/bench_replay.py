"""The demo step through compiled graph replay (fastgrad.compiled) vs
torch.nn (target: as fast or faster) and micrograd (>= 2000x).  Skipped with
the reason until fastgrad.compiled and its bench workload land."""
import pytest

from conftest import matrix


@pytest.mark.parametrize("impl, pair, gc_mode", matrix("replay_train_step"))
def test_replay_train_step(workload, impl, pair, gc_mode):
    workload("replay_train_step", impl, pair, gc_mode)
