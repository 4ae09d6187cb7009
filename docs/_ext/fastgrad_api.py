"""Sphinx extension for fastgrad's API reference.

* **Coverage.** Every name in the ``__all__`` of a public module (``PUBLIC``)
  must be described in the reference, and have a docstring of its own; so must
  the public methods and properties of public classes.  A missing one is a
  warning, and the docs build runs with warnings as errors.
* **Signatures from the stubs.** The compiled modules (``fastgrad._engine``,
  ``_replay`` ...) carry their types in hand-written ``.pyi`` files; autodoc
  only sees Cython's embedded signatures, so the signature of a compiled
  function or method is taken from its stub.
* **Aliases.** ``fastgrad.Value`` is ``fastgrad.engine.Value`` (and its class
  lives in ``fastgrad._engine``): a reference to any name that is the same
  object as a documented one resolves to it.
"""
from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

#: the modules whose ``__all__`` is the public API (the reference lists each name)
PUBLIC = ["fastgrad", "fastgrad.engine", "fastgrad.nn", "fastgrad.numgrad",
          "fastgrad.optim", "fastgrad.data", "fastgrad.compiled", "fastgrad.autograd",
          "fastgrad.functional", "fastgrad.distributed", "fastgrad.viz",
          "fastgrad.reference", "fastgrad.export"]

# module data documented by a ``#:`` comment or in the module docstring; they
# have no ``__doc__`` of their own (a bool, a str)
_DATA_OK = (bool, int, float, str, type(None))


def _public_modules() -> list[Any]:
    mods = []
    for name in PUBLIC:
        try:
            mods.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:        # a module that exists but fails to import
                raise
            # a module not on this branch yet (fastgrad.export lands later)
    return mods


# ---------------------------------------------------------------------------
# signatures from the .pyi stubs
# ---------------------------------------------------------------------------

_STUBS: dict[str, dict[str, tuple[str, str | None]]] = {}


def _stub_signatures(module: str) -> dict[str, tuple[str, str | None]]:
    """``qualname -> (args, return annotation)`` from ``module``'s .pyi file."""
    if module in _STUBS:
        return _STUBS[module]
    table: dict[str, tuple[str, str | None]] = {}
    mod = importlib.import_module(module)
    path = Path(mod.__file__ or "").with_name(module.rsplit(".", 1)[-1] + ".pyi")
    if path.exists():
        tree = ast.parse(path.read_text())

        def visit(body: list[ast.stmt], prefix: str) -> None:
            for node in body:
                if isinstance(node, ast.ClassDef):
                    visit(node.body, prefix + node.name + ".")
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    if any(isinstance(d, ast.Name) and d.id == "overload"
                           for d in node.decorator_list):
                        continue
                    args = node.args
                    # drop self/cls: autodoc shows methods without them
                    if prefix and not any(isinstance(d, ast.Name) and d.id == "staticmethod"
                                          for d in node.decorator_list):
                        args = ast.arguments(
                            posonlyargs=args.posonlyargs[1:] if args.posonlyargs else [],
                            args=args.args[1:] if not args.posonlyargs else args.args,
                            vararg=args.vararg, kwonlyargs=args.kwonlyargs,
                            kw_defaults=args.kw_defaults, kwarg=args.kwarg,
                            defaults=args.defaults)
                    sig = "(" + ast.unparse(args) + ")"
                    ret = ast.unparse(node.returns) if node.returns else None
                    table[prefix + node.name] = (sig, ret)
        visit(tree.body, "")
    _STUBS[module] = table
    return table


def _process_signature(app: Sphinx, what: str, name: str, obj: Any, options: Any,
                       signature: str | None, return_annotation: str | None
                       ) -> tuple[str | None, str | None] | None:
    if isinstance(obj, property) or what in ("property", "attribute", "data"):
        return None
    module = getattr(obj, "__module__", None) or ""
    qual = getattr(obj, "__qualname__", None)
    owner = getattr(obj, "__objclass__", None)   # a method of a compiled class
    if owner is not None:
        module = owner.__module__
        qual = f"{owner.__qualname__}.{getattr(obj, '__name__', '')}"
    if not module.startswith("fastgrad._") or not qual:
        return None
    table = _stub_signatures(module)
    if not table:
        return None                      # a private pure-Python module: no stub
    if what in ("class", "exception"):
        entry = table.get(qual + ".__init__") or table.get(qual + ".__new__")
        if entry:
            return entry[0], None
        # made by a factory (Program by fastgrad.compile): no constructor to show
        return "", None
    entry = table.get(qual)
    if entry:
        return entry
    return None


# ---------------------------------------------------------------------------
# aliases: fastgrad.Value -> fastgrad.engine.Value, fastgrad._engine.Value -> ...
# ---------------------------------------------------------------------------

def _resolve_object(target: str) -> Any:
    parts = target.split(".")
    for k in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        try:
            for attr in parts[k:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _missing_reference(app: Sphinx, env: Any, node: Any, contnode: Any) -> Any:
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if not target.startswith(("fastgrad.", "Value", "Program")):
        if node.get("py:module"):
            target = node["py:module"] + "." + target
        else:
            return None
    if target in ("Value", "Program"):
        target = {"Value": "fastgrad.engine.Value", "Program": "fastgrad.compiled.Program"}[target]
    elif "." not in target:
        # a bare name from a string annotation ("ExportedProgram"): the one
        # documented fastgrad object of that name
        domain = env.get_domain("py")
        found = [n for n, e in domain.objects.items()
                 if not e.aliased and n.startswith("fastgrad.") and n.rsplit(".", 1)[-1] == target]
        if len(found) != 1:
            return None
        target = found[0]
    obj = _resolve_object(target)
    if obj is None:
        return None
    domain = env.get_domain("py")
    for fullname, entry in domain.objects.items():
        if entry.aliased or not fullname.startswith("fastgrad."):
            continue
        if fullname.rsplit(".", 1)[-1] != target.rsplit(".", 1)[-1]:
            continue
        if _resolve_object(fullname) is obj:
            newnode = domain.resolve_xref(env, node["refdoc"], app.builder, entry.objtype,
                                          fullname, node, contnode)
            if newnode is None:
                newnode = domain.resolve_xref(env, node["refdoc"], app.builder, "obj",
                                              fullname, node, contnode)
            return newnode
    return None


# ---------------------------------------------------------------------------
# coverage
# ---------------------------------------------------------------------------

def _own_doc(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None)
    if not isinstance(doc, str):
        return ""
    if not inspect.isclass(obj) and not inspect.isroutine(obj) and not inspect.ismodule(obj) \
            and not isinstance(obj, property) and doc == type(obj).__doc__:
        return ""                       # an instance inherits its class's doc
    if inspect.isclass(obj):
        for base in obj.__mro__[1:]:
            if base.__doc__ == doc and base.__module__ in ("builtins", "typing"):
                return ""               # object's / Exception's docstring
    return doc.strip()


def _check_coverage(app: Sphinx, env: Any) -> None:
    domain = env.get_domain("py")
    documented: dict[int, list[str]] = {}
    for fullname in domain.objects:
        obj = _resolve_object(fullname)
        if obj is not None:
            documented.setdefault(id(obj), []).append(fullname)
    names = set(domain.objects)
    missing, undocumented = [], []
    for mod in _public_modules():
        all_ = getattr(mod, "__all__", None)
        if all_ is None:
            logger.warning("fastgrad_api: %s has no __all__", mod.__name__)
            continue
        for name in all_:
            full = f"{mod.__name__}.{name}"
            try:
                obj = getattr(mod, name)
            except AttributeError:
                logger.warning("fastgrad_api: %s is in __all__ but does not exist", full)
                continue
            if inspect.ismodule(obj) and not obj.__name__.startswith("fastgrad"):
                continue      # fastgrad.nn's random: bound by its star import, as micrograd's
            listed = full in names or (
                not isinstance(obj, _DATA_OK) and id(obj) in documented)
            if not listed:
                missing.append(full)
            if isinstance(obj, _DATA_OK):
                continue      # data: its entry in the reference is its documentation
            if inspect.ismodule(obj):
                continue      # fastgrad.optim, fastgrad.distributed: pages of their own
            if not _own_doc(obj):
                undocumented.append(full)
            if inspect.isclass(obj) and obj.__module__.startswith("fastgrad"):
                for attr, member in vars(obj).items():
                    if attr.startswith("_"):
                        continue
                    if not (inspect.isroutine(member) or isinstance(member, property)
                            or type(member).__name__ in ("getset_descriptor",
                                                         "member_descriptor")):
                        continue
                    if type(member).__name__ in ("getset_descriptor", "member_descriptor") \
                            and f"{attr} :" in (obj.__doc__ or ""):
                        continue      # a slot / C field listed under "Attributes"
                    if not _own_doc(member) and not _own_doc(getattr(obj, attr, None)):
                        # an override of a documented base-class method is fine
                        if any(_own_doc(vars(b).get(attr)) for b in obj.__mro__[1:]
                               if attr in vars(b)):
                            continue
                        undocumented.append(f"{full}.{attr}")
    for full in missing:
        logger.warning("fastgrad_api: public name %s is not in the API reference", full)
    for full in undocumented:
        logger.warning("fastgrad_api: public name %s has no docstring", full)
    env.fastgrad_api_checked = len(names)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("autodoc-process-signature", _process_signature)
    app.connect("missing-reference", _missing_reference)
    app.connect("env-check-consistency", _check_coverage)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
