"""Recording (``_replay_record.pxi``): the node table, the tapes, the passes.

The recorder keeps no Python object per node: each node's slot code sits in
its visit-stamp fields while it records (tagged per build), tapes are C
arrays.  These tests go through the corners of that bookkeeping -- outputs
that are leaves or parameter-only results, roots already recorded with an
earlier root, shared constants, inputs the graph does not use, big graphs,
codes a former build left on the nodes (with the same tag, too) and sorts
after a build -- against eager mode, bit for bit.
"""
import random

import numpy as np
import pytest

import fastgrad
from fastgrad import Value

pytestmark = pytest.mark.compiled_only("the compiled recorder")

if fastgrad.COMPILED:
    from fastgrad import _replay


def bits(a):
    return np.asarray(a, np.float64).tobytes()


def test_outputs_that_are_leaves_params_or_parameter_only_results():
    w = Value(1.5)

    def fn(x):
        c = Value(-0.0)                   # a constant leaf, output directly
        return [x[0] * w + x[1], x[1], w, w * w + 1.0, c, (x[0] * w).tanh()]

    prog = fastgrad.compile(fn, 2, params=[w])
    X = np.array([[0.5, -2.0], [-0.0, 3.0], [1e300, -1e-300]])
    out = prog.predict(X)
    outs_b = np.empty_like(out)
    prog.batch(X, outputs=outs_b)
    expect = np.array([[v.data for v in fn([Value(a), Value(b)])] for a, b in X])
    assert bits(out) == bits(expect)
    assert bits(outs_b) == bits(expect)
    assert [prog.forward(r).tolist() for r in X] == expect.tolist()


def test_a_root_recorded_with_an_earlier_root_and_shared_constants():
    random.seed(2)
    from fastgrad.nn import MLP
    model = MLP(2, [5, 1])

    def fn(x):
        k = Value(0.25)                   # one constant, read by all three
        score = model(x[:2])
        loss = (1 + -x[2] * score).relu() * k + k
        return [loss, score, score * k]      # score: inside loss's graph

    prog = fastgrad.compile(fn, 3, params=model.parameters())
    X = np.random.default_rng(0).normal(size=(7, 3))
    out = np.empty((7, 3))
    prog.batch(X, outputs=out)
    expect = [[v.data for v in fn([Value(t) for t in r])] for r in X]
    assert bits(out) == bits(expect)
    assert prog.tape()["constants"].tolist().count(0.25) == 1


def test_unused_inputs_with_allow_unused():
    w = Value(2.0)
    x = [Value(1.0) for _ in range(3)]
    with pytest.raises(ValueError, match=r"input\(s\) \[1\] are not in the graph"):
        _replay.build([x[0] * w + x[2]], x, [w])
    prog = _replay.build([x[0] * w + x[2]], x, [w], allow_unused=True)
    gin = np.empty((2, 3))
    prog.batch(np.array([[1.0, 5.0, 2.0], [3.0, -1.0, 0.5]]), reduce="sum",
               input_grad=gin)
    assert gin.tolist() == [[2.0, 0.0, 1.0], [2.0, 0.0, 1.0]]
    assert w.grad == 4.0


def test_duplicate_and_conflicting_leaves_are_refused():
    a, b = Value(1.0), Value(2.0)
    with pytest.raises(ValueError, match="input 1 is the same Value as input 0"):
        _replay.build([a * b], [a, a], [b])
    with pytest.raises(ValueError, match="parameter 0 is also input 0"):
        _replay.build([a * b], [a], [a])
    with pytest.raises(ValueError, match="parameter 1 is the same Value as parameter 0"):
        _replay.build([a * b], [a], [b, b])
    with pytest.raises(ValueError, match=r"parameter\(s\) \[1\]"):
        _replay.build([a * b], [a], [b, Value(3.0)])
    with pytest.raises(ValueError, match="penalty depends on an input"):
        _replay.build([a * b], [a], [b], penalty=a * 2)


def test_big_graph_with_many_constants():
    # thousands of distinct constant leaves and shared subexpressions: the
    # node table grows several times while recording
    rnd = random.Random(3)
    ws = [Value(rnd.uniform(-1, 1)) for _ in range(50)]
    numbers = [rnd.uniform(-1, 1) for _ in range(3000)]

    def fn(x):
        acc = x[0]
        for i, cst in enumerate(Value(t) for t in numbers):
            acc = (acc * cst + ws[i % 50] * x[1]).tanh() if i % 7 == 0 else acc + cst
        return [acc, acc * acc]

    prog = fastgrad.compile(fn, 2, params=ws)
    X = np.random.default_rng(3).normal(size=(5, 2))
    out = np.empty((5, 2))
    pg = np.empty(50)
    prog.batch(X, outputs=out, param_grad=pg, reduce="sum")
    for p in ws:
        p.grad = 0.0
    rows = [[Value(t) for t in r] for r in X]
    eo = [fn(r) for r in rows]
    sum(o[0] for o in eo).backward()
    assert bits(out) == bits([[v.data for v in o] for o in eo])
    np.testing.assert_allclose(pg, [p.grad for p in ws], rtol=1e-12, atol=1e-300)
    assert len(prog.tape()["constants"]) == 3000


def test_codes_left_by_a_former_build_with_the_same_tag_are_not_used():
    # build 1 leaves codes (in the stamp fields) on p, q, k and m; build 2
    # gets the same tag (as 2**15 builds later) and must not take them for
    # its own: m is under its second root only, p and q are parameters again
    p, q = Value(1.5), Value(-2.0)
    k = Value(3.0)
    m = p * k + q
    _replay.build([m * m], [], [p, q])
    tag = _replay._build_tag()
    x = Value(0.5)
    out1 = x * q                          # does not reach m
    out2 = (m + x).tanh() * p             # m: under the second root only
    _replay._set_build_tag(tag - 1)       # the next build reuses the tag
    prog = _replay.build([out1, out2], [x], [q, p])
    assert _replay._build_tag() == tag
    assert bits(prog.forward([0.5])) == bits([out1.data, out2.data])
    assert prog.tape()["constants"].tolist() == [3.0]
    # a parameter outside the graph, with a former code of the same tag, is
    # reported as unused (not as a duplicate)
    r = Value(7.0)
    _replay.build([r * 2.0], [], [r])
    _replay._set_build_tag(_replay._build_tag() - 1)
    with pytest.raises(ValueError, match=r"parameter\(s\) \[1\]"):
        _replay.build([out1], [x], [q, r])


def test_sorts_after_a_build_are_not_fooled_by_its_codes():
    # a build leaves its codes in the nodes' stamp fields (48th bit set);
    # backward() sorts after it, at any epoch (they wrap at 2**47), still
    # visit every node
    from fastgrad._engine import _set_sort_epoch
    x, w = Value(0.5), Value(-1.25)

    def grads(build):
        x.grad = w.grad = 0.0
        y = (x * w).tanh() + w * w
        if build:
            _replay.build([y], [x], [w])
        y.backward()
        return bits([x.grad, w.grad])

    want = grads(False)
    # the epoch whose backward() sort would stamp x with x's own code (input
    # 0: 1, in the next build's tag) if sorts used the 48th bit
    tag = 0x8000 | ((_replay._build_tag() + 1) & 0x7FFF)
    clash = ((tag << 32) | 1) - 2          # (the build's own sort is one)
    try:
        for epoch in (0, 2**32 - 2, 2**47 - 3, 2**48 - 2, clash):
            _set_sort_epoch(epoch)
            for _ in range(4):
                assert grads(True) == want
    finally:
        _set_sort_epoch(0)


def test_build_stages_hook():
    w = Value(1.0)
    was = _replay._set_build_stages(True)
    try:
        fastgrad.compile(lambda x: x[0] * w, 1, params=[w])
    finally:
        _replay._set_build_stages(was)
    stages = _replay._build_stages()
    assert [s[0] for s in stages] == ["record", "fixups", "fuse", "forward_tape",
                                      "layers", "scalar_dots", "finish"]
    assert all(wall >= 0 and cpu >= 0 for _, wall, cpu in stages)
    # off by default (a clock read per stage costs a small compile ~1.5%)
    assert not was
    fastgrad.compile(lambda x: x[0] * w, 1, params=[w])
    assert _replay._build_stages() == []
