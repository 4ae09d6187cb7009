"""Every op of the engine as a one- or two-operand function of Values,
wrapped so that eager mode never raises for any finite operand (eager checks
domains; the replay does not): the ops of the random expression graphs in
the replay's tests (test_compiled.py, test_replay_one_row.py)."""
from fastgrad import maximum, minimum

SAFE_UNARY = {
    "relu": lambda a: a.relu(),
    "tanh": lambda a: a.tanh(),
    "sigmoid": lambda a: a.sigmoid(),
    "abs": lambda a: abs(a),
    "exp": lambda a: a.tanh().exp(),
    "log": lambda a: (a * a + 0.5).log(),
    "sqrt": lambda a: (a * a + 0.5).sqrt(),
    "addc": lambda a: a + 0.5,
    "subc": lambda a: a - 1.25,
    "mulc": lambda a: a * -1.5,
    "neg": lambda a: -a,
    "rsubc": lambda a: 2 - a,
    "divc": lambda a: a / 3.0,
    "rdivc": lambda a: 2.0 / (a * a + 0.5),
    "powc2": lambda a: a.tanh() ** 2,
    "powc3": lambda a: a.tanh() ** 3,
    "powch": lambda a: (a * a + 0.5) ** 0.5,
    "rpowc": lambda a: 2.0 ** a.tanh(),
}
SAFE_BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (b * b + 0.5),
    "pow": lambda a, b: (a * a + 0.5) ** b.tanh(),
    "max": lambda a, b: maximum(a, b),
    "min": lambda a, b: minimum(a, b),
}
