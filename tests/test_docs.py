"""The examples in the README and in public docstrings run and print what
they claim (doctest)."""
import doctest
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

MODULES = ["fastgrad", "fastgrad.engine",
           pytest.param("fastgrad._engine", marks=pytest.mark.compiled_only(
               "doctests of the compiled module")),
           "fastgrad.nn",
           "fastgrad.numgrad", "fastgrad.optim", "fastgrad.data", "fastgrad.viz",
           "fastgrad.reference",
           pytest.param("fastgrad.autograd", marks=pytest.mark.compiled_only(
               "fastgrad.grad needs the compiled build")),
           pytest.param("fastgrad.functional", marks=pytest.mark.compiled_only(
               "fastgrad.functional needs the compiled build"))]


@pytest.mark.compiled_only("README examples include fastgrad.grad and compile")
def test_readme_examples():
    result = doctest.testfile(str(ROOT / "README.md"), module_relative=False,
                              optionflags=FLAGS, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = finder.find(module, name)
    if name == "fastgrad._engine":
        # doctest does not look inside compiled classes: collect by hand
        for obj in (module.Value, module.maximum, module.minimum, module.sum,
                    module.logsumexp, module.softmax):
            tests += finder.find(obj, f"{name}.{obj.__name__}", module=False,
                                 globs={})
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for t in tests:
        runner.run(t)
    assert runner.tries > 0, f"no docstring example found in {name}"
    assert runner.failures == 0, f"{runner.failures} docstring example(s) failed in {name}"
