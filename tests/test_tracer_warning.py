"""fastgrad.TracerWarning (issue #12, item 9): compile() warns about what it
freezes at trace time -- .data reads of traced Values inside fn, and leaves
the caller holds that are baked in as constants."""
import threading
import warnings

import pytest

import fastgrad
from fastgrad import TracerWarning, Value
from fastgrad.nn import MLP

pytestmark = pytest.mark.compiled_only("compile() tracing hooks of the compiled engine")


def test_tracer_warning_is_public_and_a_user_warning():
    assert fastgrad.TracerWarning is TracerWarning
    assert "TracerWarning" in fastgrad.__all__
    assert issubclass(TracerWarning, UserWarning)


def test_tracing_branch_on_data_warns():
    # the reviewer's case: traced at 1.0, compiled f(-1) = -2, eager 3
    def f(x):
        return x[0] * 2 if x[0].data > 0 else x[0] * -3
    with pytest.warns(TracerWarning, match=r"read \.data of input 0"):
        prog = fastgrad.compile(f, 1)
    assert prog.forward([-1.0]) == -2.0          # what was frozen
    assert f([Value(-1.0)]).data == 3.0          # eager


def test_tracing_loop_count_from_data_warns():
    def f(x):
        out = x[0]
        for _ in range(int(x[0].data * 3)):
            out = out * x[0]
        return out
    with pytest.warns(TracerWarning, match="frozen"):
        fastgrad.compile(f, 1, example=[2.0])


def test_tracing_data_read_of_intermediate_and_parameter_warns():
    w = Value(0.5, label="w")

    def f(x):
        h = (x[0] * w).tanh()
        if h.data > 0.1:                     # an intermediate node
            h = h * 2
        if w.data > 0:                       # a parameter
            h = h + 1
        return h
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TracerWarning)
        fastgrad.compile(f, 1, params=[w])
    messages = [str(c.message) for c in caught if c.category is TracerWarning]
    assert len(messages) == 1          # one summary per compile() call
    assert "the result of 'tanh'" in messages[0]
    assert "parameter 0 ('w')" in messages[0]
    assert messages[0].index("'tanh'") < messages[0].index("parameter 0")
    assert "test_tracer_warning.py:" in messages[0]     # where fn read it
    assert caught[0].filename == __file__               # the compile() call


def test_tracing_baked_in_leaf_warns():
    c = Value(5.0, label="c")
    w = Value(2.0)
    with pytest.warns(TracerWarning, match=r"leaf Value 'c' \(data=5.0\) .*baked"):
        prog = fastgrad.compile(lambda x: x[0] * c + w, 1, params=[w])
    c.data = 100.0
    assert prog.forward([1.0]) == 7.0            # the baked value, as warned


def test_tracing_warnings_can_be_errors():
    c = Value(5.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TracerWarning)
        with pytest.raises(TracerWarning):
            fastgrad.compile(lambda x: x[0] if x[0].data > 0 else -x[0], 1)
        with pytest.raises(TracerWarning, match="baked"):
            fastgrad.compile(lambda x: x[0] * c, 1)


def test_tracing_clean_fn_does_not_warn():
    # pytest turns every warning into an error (filterwarnings = error)
    model = MLP(2, [4, 1])
    params = model.parameters()

    def f(x):
        k = Value(3.0)                       # made inside fn: not held outside
        return (model(x) * k + 2).relu() - x[0] * 0.5
    prog = fastgrad.compile(f, 2, params=params,
                            penalty=lambda ps: sum(p * p for p in ps))
    x = [0.3, -0.2]
    assert prog.forward(x) == pytest.approx(f([Value(v) for v in x]).data)
    # reading .data after the trace (eager code) does not warn either
    assert isinstance(params[0].data, float)


def test_tracing_other_threads_do_not_warn():
    seen = []

    def other():
        v = Value(1.0) * 2
        seen.append(v.data)               # another thread is not tracing

    def f(x):
        t = threading.Thread(target=other)
        t.start()
        t.join()
        return x[0] * 2
    fastgrad.compile(f, 1)
    assert seen == [2.0]


def test_data_setter_still_validates():
    v = Value(1.0)
    v.data = 3
    assert v.data == 3.0 and type(v.data) is float
    with pytest.raises(TypeError, match="Value.data"):
        v.data = "x"
    with pytest.raises(AttributeError):
        del v.data
