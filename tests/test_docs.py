"""The examples in the README and in public docstrings run and print what
they claim (doctest); every other code block of the README runs too, and the
README stays short and true to the committed benchmark figures."""
import doctest
import importlib
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

MODULES = ["fastgrad", "fastgrad.engine",
           pytest.param("fastgrad._engine", marks=pytest.mark.compiled_only(
               "doctests of the compiled module")),
           "fastgrad.nn",
           "fastgrad.numgrad", "fastgrad.optim", "fastgrad.data", "fastgrad.viz",
           "fastgrad.reference", "fastgrad._composite",
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


def _readme_blocks(lang):
    text = (ROOT / "README.md").read_text()
    return re.findall(r"^```" + lang + r"\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 210, f"README.md has {len(lines)} lines (the docs site has room)"


def _readme_scripts():
    # the doctest blocks (">>>") are test_readme_examples'
    return [b for b in _readme_blocks("python") if not b.lstrip().startswith(">>>")]


@pytest.mark.compiled_only("README's scripts use fastgrad.compile")
@pytest.mark.parametrize("k", range(len(_readme_scripts())))
def test_readme_python_blocks_run(k, tmp_path):
    """Each ```python block of the README that is not a doctest runs as a script
    in a fresh interpreter, in an empty directory (nothing from other blocks)."""
    block = _readme_scripts()[k]
    for module in re.findall(r"^(?:from|import) (\w+)", block, flags=re.M):
        pytest.importorskip(module)
    script = tmp_path / f"readme_block_{k}.py"
    script.write_text(block)
    import fastgrad
    src = os.path.dirname(os.path.dirname(os.path.abspath(fastgrad.__file__)))
    env = dict(os.environ, PYTHONWARNINGS="error::DeprecationWarning:fastgrad")
    if os.path.basename(src) not in ("site-packages", "dist-packages"):
        env["PYTHONPATH"] = src          # a checkout; an installed fastgrad is found as is
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"README block {k} failed:\n{block}\n{proc.stderr}"


def test_readme_commands_need_no_pythonpath():
    for block in _readme_blocks("bash") + _readme_blocks("console"):
        assert "PYTHONPATH" not in block, block


def test_readme_bench_table_matches_the_committed_run():
    """The README's speed table is generated from docs/_data/bench.json (a real
    `fastgrad bench --json` run), never typed in by hand."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- bench-table:.*?-->\n(.*?)<!-- /bench-table -->", text, flags=re.S)
    assert m, "README.md lacks the bench-table markers"
    spec = importlib.util.spec_from_file_location(
        "readme_table", ROOT / "docs" / "_data" / "readme_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    run = json.loads((ROOT / "docs" / "_data" / "bench.json").read_text())
    assert run["mode"] in ("quick", "full"), "bench.json must be a real run, not --smoke"
    assert m.group(1).strip() == mod.table(run).strip(), (
        "README's speed table differs from docs/_data/bench.json: run "
        "`python docs/_data/readme_table.py` and paste its output")
