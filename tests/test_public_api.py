"""Every public name imports from its documented path, and the layout keeps
its one direction of imports (ARCHITECTURE.md; issue 25)."""
import importlib
import pathlib
import pkgutil
import subprocess
import sys

import pytest

import fastgrad

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The paths the README, the docs, the examples and the docstrings show, by
# module.  A name moved to another module must stay importable from here; a
# name added to a public module's __all__ is added here too (the test below
# says which).
DOCUMENTED = {
    "fastgrad": ["Value", "maximum", "minimum", "no_grad", "num_grad", "gradcheck",
                 "GradcheckError", "draw_dot", "to_dot", "compile", "compile_graph",
                 "grad", "TracerWarning", "PerformanceWarning", "optim", "data", "sweep",
                 "distributed", "sum", "logsumexp", "softmax", "log_softmax",
                 "cross_entropy",
                 "COMPILED", "__version__"],
    "fastgrad.engine": ["Value", "maximum", "minimum", "no_grad", "is_grad_enabled",
                        "set_grad_enabled", "zero_grad", "dot_add", "sum", "logsumexp",
                        "softmax", "log_softmax", "cross_entropy"],
    # random and Value: micrograd.nn's star import binds them (issue 22)
    "fastgrad.nn": ["Module", "Neuron", "Layer", "MLP", "random", "Value"],
    "fastgrad.optim": ["Optimizer", "SGD", "Adam", "lr_sweep", "LRSweepResult"],
    "fastgrad.numgrad": ["num_grad", "gradcheck", "GradcheckError"],
    "fastgrad.data": ["iterate_minibatches", "sample_batch", "MiniBatches"],
    "fastgrad.viz": ["draw_dot", "to_dot", "DEFAULT_MAX_NODES"],
    "fastgrad.compiled": ["compile", "compile_graph", "make_demo_step", "Program",
                          "ProgramSummary", "LayerSummary", "PerformanceWarning"],
    "fastgrad.autograd": ["grad"],
    "fastgrad.functional": ["hvp", "vhp", "hessian", "jacobian"],
    "fastgrad.reference": ["Value", "MLP", "Neuron", "Layer", "Module", "maximum",
                           "minimum", "dot_add", "zero_grad", "no_grad", "is_grad_enabled",
                           "set_grad_enabled", "sum", "logsumexp", "softmax", "log_softmax",
                           "cross_entropy"],
    "fastgrad.distributed": ["sweep", "DataParallel", "SweepError", "SweepFailure",
                             "SweepResult"],
    "fastgrad.bench": ["add_arguments", "run", "main", "machine_info", "format_table",
                       "format_header", "write_plot"],
    "fastgrad.__main__": ["main"],
}
# in the pure-Python build these refuse clearly, by design
COMPILED_ONLY = {("fastgrad.compiled", "Program")}


def _import(module, name):
    # the statement a user writes, not getattr: it also resolves submodules
    # and a package's lazy __getattr__
    ns: dict = {}
    if not fastgrad.COMPILED and (module, name) in COMPILED_ONLY:
        with pytest.raises(RuntimeError, match="needs fastgrad's compiled build"):
            exec(f"from {module} import {name}", ns)      # noqa: S102 - names from the table
        return
    exec(f"from {module} import {name}", ns)              # noqa: S102 - names from the table
    assert ns[name] is not None, f"{module}.{name}"


@pytest.mark.parametrize("module", sorted(DOCUMENTED))
def test_documented_names_import_from_their_path(module):
    for name in DOCUMENTED[module]:
        _import(module, name)


def _public_modules():
    out = ["fastgrad"]
    for info in pkgutil.walk_packages(fastgrad.__path__, "fastgrad."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            out.append(info.name)
    return sorted(out)


@pytest.mark.parametrize("module", _public_modules())
def test_every_name_in_all_imports(module):
    mod = importlib.import_module(module)
    names = getattr(mod, "__all__", None)
    assert names is not None, f"{module} has no __all__"
    for name in names:
        _import(module, name)
    documented = DOCUMENTED.get(module)
    if documented is not None:
        missing = set(names) - set(documented) - {"COMPILED"}
        assert not missing, f"{module}.__all__ has names the table above lacks: {missing}"


def test_lazy_package_attributes_are_the_distributed_ones():
    import fastgrad.distributed as d
    assert fastgrad.sweep is d.sweep
    assert fastgrad.distributed is d
    assert fastgrad.optim.lr_sweep.__module__ == "fastgrad.optim"


def test_sweep_classes_are_named_by_their_public_module():
    import pickle

    from fastgrad.distributed import SweepError, SweepFailure, SweepResult
    for cls in (SweepError, SweepFailure, SweepResult):
        assert cls.__module__ == "fastgrad.distributed"
    f = SweepFailure(0, {"a": 1}, "exception", "E: x", "tb")
    assert repr(pickle.loads(pickle.dumps(f))) == repr(f)


def test_the_library_does_not_load_the_bench_or_scale_out():
    # every library module imported: neither the bench nor (unless asked)
    # the distributed package comes with them
    code = ("import sys, fastgrad, fastgrad.nn, fastgrad.optim, fastgrad.compiled, "
            "fastgrad.functional, fastgrad.numgrad, fastgrad.data, fastgrad.viz, "
            "fastgrad.reference, fastgrad.demo\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('fastgrad.bench', "
            "'fastgrad.distributed')))\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_bench_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "fastgrad.bench", "--list", "--only", "optim"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "sgd_step"


def test_import_graph_check_is_green():
    """.ci/check_imports.py (the lint job's check) on this checkout; absent
    from the sdist, where this is skipped."""
    script = ROOT / ".ci" / "check_imports.py"
    if not script.exists() or not (ROOT / "src" / "fastgrad").is_dir():
        pytest.skip("no .ci/check_imports.py or src/ here (an sdist or an installed copy)")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_import_graph_check_finds_a_cycle_and_a_bench_import(tmp_path):
    script = ROOT / ".ci" / "check_imports.py"
    if not script.exists():
        pytest.skip("no .ci/check_imports.py here (an sdist)")
    pkg = tmp_path / "src" / "fastgrad"
    (pkg / "bench").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "bench" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from fastgrad import b\n")
    (pkg / "b.py").write_text("import fastgrad.a\nfrom fastgrad.bench import x\n")
    out = subprocess.run([sys.executable, str(script), "--src", str(tmp_path / "src")],
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert "import cycle among fastgrad.a, fastgrad.b" in out.stdout
    assert "fastgrad.b -> fastgrad.bench" in out.stdout
