"""fastgrad type-checks for its users: ``mypy --strict`` and pyright's strict
mode on a realistic script.

The script (tests/typecheck/user_script.py) must pass both and run;
misspelt or undeclared attributes on a Value must be mypy errors, while the
documented micrograd attributes (``label``, ``_prev``, ``_op``, ``_backward``)
stay typed.  Skipped when mypy is not installed.
"""
import os
import re
import subprocess
import sys
import textwrap

import pytest

import fastgrad

api = pytest.importorskip("mypy.api")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "typecheck", "user_script.py")
SRC = os.path.dirname(os.path.dirname(os.path.abspath(fastgrad.__file__)))


@pytest.fixture(scope="module")
def mypy(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("mypy_cache"))

    def run(*args):
        # fastgrad as its users see it: the package (with its .pyi stubs and
        # py.typed) on the search path, fastgrad's pyproject settings for the
        # optional untyped dependencies (graphviz, sklearn, tqdm)
        old = os.environ.get("MYPYPATH")
        if os.path.basename(SRC) not in ("site-packages", "dist-packages"):
            os.environ["MYPYPATH"] = SRC   # a checkout; an installed fastgrad is found as is
        try:
            out, err, status = api.run(["--strict", "--cache-dir", cache,
                                        "--config-file", os.path.join(ROOT, "pyproject.toml"),
                                        "--no-error-summary", "--show-error-codes", *args])
        finally:
            if old is None:
                os.environ.pop("MYPYPATH", None)
            else:
                os.environ["MYPYPATH"] = old
        return out + err, status
    return run


def test_user_script_passes_pyright_strict():
    """pyright's strict mode (basedpyright: pyright with its JavaScript bundled)
    on the same script, with [tool.basedpyright] from pyproject.toml."""
    import shutil
    exe = shutil.which("basedpyright")
    if exe is None:
        pytest.skip("basedpyright is not installed (the test extra brings it)")
    env = dict(os.environ)
    if os.path.basename(SRC) in ("site-packages", "dist-packages"):
        env.pop("PYTHONPATH", None)       # an installed fastgrad is found as is
    proc = subprocess.run([exe, "--project", os.path.join(ROOT, "pyproject.toml"), SCRIPT],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 errors" in proc.stdout


def test_user_script_passes_mypy_strict(mypy):
    out, status = mypy(SCRIPT)
    assert status == 0, out
    assert out == ""


@pytest.mark.compiled_only("the script calls fastgrad.compile")
def test_user_script_runs(tmp_path):
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("loss ")


NEGATIVE = textwrap.dedent("""\
    from fastgrad import Value
    from fastgrad.nn import MLP
    v = Value(1.0, label="v")
    v.lable                                  # line 4: a typo
    v.note = "mine"                          # line 5: a user attribute
    s: str = v.data                          # line 6: data is a float
    MLP(2, [4, 1]).paramters()               # line 7: a typo on a model
    Value("3")                               # line 8: not a number
    # the documented attributes stay typed (no error below)
    name: str = v.label
    ops: str = v._op
    kids: set[Value] = v._prev
    def rule() -> None:
        pass
    v._backward = rule
    v._backward()
    setattr(v, "note", "mine")               # the documented way for own attributes
    reveal_type(v + 1)
    reveal_type(2 * v)
    reveal_type(v.grad)
""")


def test_unknown_attributes_are_errors(mypy, tmp_path):
    path = tmp_path / "negative.py"
    path.write_text(NEGATIVE)
    out, status = mypy(str(path))
    assert status == 1
    errors = {int(m.group(1)): m.group(2)
              for m in re.finditer(r"negative\.py:(\d+): error: (.*)", out)}
    assert sorted(errors) == [4, 5, 6, 7, 8], out
    assert '"Value" has no attribute "lable"' in errors[4]
    assert '"Value" has no attribute "note"' in errors[5]
    assert "[assignment]" in errors[6]
    assert 'has no attribute "paramters"' in errors[7]
    assert "[arg-type]" in errors[8]
    notes = re.findall(r'Revealed type is "([^"]+)"', out)
    assert notes[:2] == ["fastgrad._engine.Value", "fastgrad._engine.Value"]
    assert notes[2] in ("float", "builtins.float")         # spelt per mypy version
