"""The lecture's worked example: f = 2(xy + max(z, w)) at [3, -4, 2, -1]."""
from fastgrad import Value, maximum


def test_lecture_gate_example():
    x, y, z, w = Value(3.0), Value(-4.0), Value(2.0), Value(-1.0)
    f = 2 * (x * y + maximum(z, w))
    f.backward()
    # hand-derived on the slide: f = -20, grad = [y, x, 1(z>w), 1(w>z)] * 2
    assert f.data == -20.0
    assert [x.grad, y.grad, z.grad, w.grad] == [-8.0, 6.0, 2.0, 0.0]
