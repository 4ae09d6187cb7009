"""Check fastgrad's import graph: no cycle inside the package, and the library
never imports its tools (``fastgrad.bench``).

Reads every ``import`` of every module under ``src/fastgrad`` from its source
(``ast`` for ``.py``; the ``import``/``cimport`` lines of ``.pyx``/``.pxd``/
``.pxi``, which ``ast`` cannot parse), function-local and ``TYPE_CHECKING``
imports included: a lazy import is still a dependency, and a cycle through one
is still a cycle a reader has to hold in mind.  Dependency-free (the standard
library only), so the ``lint`` job runs it without installing anything.

Usage: ``python .ci/check_imports.py [--graph]`` from the repository root (or
anywhere); exit status 1 on a violation, each one printed with the import
lines that make it.  ``--graph`` prints the module graph.

The layers, lowest first (ARCHITECTURE.md explains them): the compiled core and
its pure-Python twins; the library (engine, nn, optim, compiled, ...);
scale-out (``fastgrad.distributed``); tools (``fastgrad.bench``,
``fastgrad.demo``, the ``fastgrad`` command).  Only the "never import the
bench" rule is enforced beyond acyclicity; the other layers follow from it
and from the graph being acyclic.
"""
import argparse
import ast
import os
import re
import sys
from typing import Dict, Iterator, List, Optional, Set, Tuple

PACKAGE = "fastgrad"
# modules allowed to import fastgrad.bench: the bench itself and the command
# that dispatches to it by name (fastgrad.__main__ names it as a string only)
TOOLS = ("fastgrad.bench", "fastgrad.__main__")
FORBIDDEN = "fastgrad.bench"
# Upward imports accepted on purpose, each with its reason (ARCHITECTURE.md):
# left out of the cycle search, listed in every report.  Keep this short.
ALLOWED_UPWARD = {
    ("fastgrad._replay", "fastgrad.export"):
        "Program.to_torch/to_onnx/load_torch_state forward to fastgrad.export, "
        "imported when called (export reads the program through Program.graph())",
}

Edge = Tuple[str, int]            # (imported module, line number)

_CYTHON_IMPORT = re.compile(
    r"^\s*(?:from\s+(?P<from>[\w.]+)\s+c?import\s+(?P<names>[^#]+)"
    r"|c?import\s+(?P<mods>[^#]+))")


def module_files(src: str) -> Dict[str, str]:
    """Map module name -> file for every module under ``src/fastgrad``
    (``.py``, ``.pyx``/``.pxd``; a ``.pxi``'s imports are its ``.pyx``'s, and
    a violation names the file and line of each import)."""
    out: Dict[str, str] = {}
    root = os.path.join(src, PACKAGE)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__pycache__")))
        rel = os.path.relpath(dirpath, src).replace(os.sep, ".")
        for fn in sorted(filenames):
            base, ext = os.path.splitext(fn)
            if ext not in (".py", ".pyx", ".pxd"):
                continue                 # a .pxi belongs to the .pyx including it
            if ext == ".py" and base == "__init__":
                name = rel
            else:
                name = f"{rel}.{base}"
            # a .pyx and its .pxd are one module; keep the first file seen
            # (both are scanned below through _sources)
            out.setdefault(name, os.path.join(dirpath, fn))
    return out


_INCLUDE = re.compile(r'^\s*include\s+["\']([^"\']+)["\']')


def _sources(name: str, path: str) -> List[str]:
    """The files whose imports belong to module ``name``: a ``.pyx``, its
    ``.pxd`` and the ``.pxi`` files it includes (their code is the module's)."""
    base, ext = os.path.splitext(path)
    if ext not in (".pyx", ".pxd"):
        return [path]
    out = [p for p in (base + ".pyx", base + ".pxd") if os.path.exists(p)]
    if os.path.exists(base + ".pyx"):
        with open(base + ".pyx", encoding="utf-8") as f:
            for line in f:
                m = _INCLUDE.match(line)
                if m:
                    out.append(os.path.join(os.path.dirname(path), m.group(1)))
    return out


def _resolve(target: str, modules: Dict[str, str]) -> Optional[str]:
    """The fastgrad module a dotted import name loads (longest known prefix)."""
    parts = target.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in modules:
            return cand
        parts.pop()
    return None


def _py_imports(path: str, name: str, is_pkg: bool) -> Iterator[Tuple[str, List[str], int]]:
    """(module, imported names, line) for each import statement of a .py file."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = name if is_pkg else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield mod, [a.name for a in node.names], node.lineno


def _cython_imports(path: str) -> Iterator[Tuple[str, List[str], int]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            m = _CYTHON_IMPORT.match(line)
            if not m:
                continue
            if m.group("from"):
                names = [n.strip().split()[0] for n in m.group("names").strip("() \n").split(",")
                         if n.strip() and n.strip() not in ("(", ")")]
                yield m.group("from"), names, lineno
            else:
                for mod in m.group("mods").split(","):
                    mod = mod.strip().split()[0] if mod.strip() else ""
                    if mod:
                        yield mod, [], lineno


def import_graph(src: str) -> Tuple[Dict[str, Dict[str, List[Edge]]], Dict[str, str]]:
    """``{module: {imported fastgrad module: [(file, line), ...]}}`` and the files."""
    modules = module_files(src)
    graph: Dict[str, Dict[str, List[Edge]]] = {m: {} for m in modules}
    for name, path in modules.items():
        for fpath in _sources(name, path):
            is_pkg = os.path.basename(fpath) == "__init__.py"
            it = (_py_imports(fpath, name, is_pkg) if fpath.endswith(".py")
                  else _cython_imports(fpath))
            for mod, names, lineno in it:
                if mod != PACKAGE and not mod.startswith(PACKAGE + "."):
                    continue
                targets = []
                for n in names:     # `from fastgrad import nn` imports fastgrad.nn
                    sub = _resolve(f"{mod}.{n}", modules)
                    if sub == f"{mod}.{n}":
                        targets.append(sub)
                if not targets or len(targets) < len(names):
                    # attributes of the package (`from fastgrad import Value`)
                    # load the package itself
                    t = _resolve(mod, modules)
                    if t is not None:
                        targets.append(t)
                for t in targets:
                    if t != name:
                        graph[name].setdefault(t, []).append(
                            (os.path.relpath(fpath, os.path.dirname(src)), lineno))
    return graph, modules


def find_cycles(graph: Dict[str, Dict[str, List[Edge]]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan,
    iterative: no recursion on the graph's depth)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    on_stack: Set[str] = set()
    stack: List[str] = []
    sccs: List[List[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, {})))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        sccs.append(sorted(comp))
    return sccs


def _is_tool(name: str) -> bool:
    return any(name == t or name.startswith(t + ".") for t in TOOLS)


def violations(src: str) -> List[str]:
    """Every violation as a printable paragraph (empty: the graph is clean)."""
    graph, _ = import_graph(src)
    for a, b in ALLOWED_UPWARD:
        graph.get(a, {}).pop(b, None)
    out = []
    for comp in find_cycles(graph):
        members = set(comp)
        lines = [f"import cycle among {', '.join(comp)}:"]
        for m in comp:
            for t, where in sorted(graph[m].items()):
                if t in members:
                    at = ", ".join(f"{f}:{n}" for f, n in where)
                    lines.append(f"    {m} -> {t}  ({at})")
        out.append("\n".join(lines))
    for m in sorted(graph):
        if _is_tool(m):
            continue
        for t, where in sorted(graph[m].items()):
            if t == FORBIDDEN or t.startswith(FORBIDDEN + "."):
                at = ", ".join(f"{f}:{n}" for f, n in where)
                out.append(f"the library imports the bench: {m} -> {t}  ({at})")
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=os.path.join(os.path.dirname(__file__), "..", "src"),
                    help="the directory holding the fastgrad package (default: ../src)")
    ap.add_argument("--graph", action="store_true", help="print the import graph")
    args = ap.parse_args(argv)
    src = os.path.normpath(args.src)
    if args.graph:
        graph, _ = import_graph(src)
        for m in sorted(graph):
            print(f"{m} -> {', '.join(sorted(graph[m])) or '-'}")
    found = violations(src)
    for v in found:
        print(v)
    n = len(module_files(src))
    if found:
        print(f"check_imports: {len(found)} violation(s) in {n} modules", file=sys.stderr)
        return 1
    for (a, b), why in sorted(ALLOWED_UPWARD.items()):
        print(f"allowed upward import: {a} -> {b} ({why})")
    print(f"check_imports: {n} modules, no cycle, the library does not import the bench")
    return 0


if __name__ == "__main__":
    sys.exit(main())
