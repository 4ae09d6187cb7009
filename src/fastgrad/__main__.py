"""The ``fastgrad`` command: ``fastgrad demo`` and ``fastgrad bench``.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; it is imported only when chosen, so ``fastgrad --help``
needs none of the optional extras.
"""
import argparse
import importlib
import sys
from typing import Optional, Sequence

# subcommand -> (module, one-line help)
COMMANDS = {
    "demo": ("fastgrad.demo", "train micrograd's two-moons demo and plot it"),
    "bench": ("fastgrad.bench", "time fastgrad against pure-Python engines"),
}


def version_text() -> str:
    """``fastgrad X.Y.Z (compiled build ...)`` or ``(pure-Python build: why)``.

    Examples
    --------
    >>> from fastgrad.__main__ import version_text
    >>> version_text().startswith("fastgrad ")
    True
    """
    import platform

    import fastgrad
    from fastgrad import _backend
    where = f"Python {platform.python_version()}"
    if _backend.COMPILED:
        from fastgrad import _engine
        debug = " debug" if getattr(_engine, "DEBUG_BUILD", False) else ""
        return f"fastgrad {fastgrad.__version__} (compiled{debug} build, {where})"
    return (f"fastgrad {fastgrad.__version__} (pure-Python build, {where}: "
            f"{_backend.REASON})")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fastgrad",
        # keeps --version on one line (argparse wraps the version text otherwise)
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="fastgrad: a compiled scalar autodiff engine (drop-in for micrograd).")
    parser.add_argument("--version", action="version", version=version_text(),
                        help="print the version and which build runs, then exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers = {}
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        subparsers[name] = p
        try:
            importlib.import_module(module).add_arguments(p)
        except ImportError:
            pass   # reported when the command runs
    # unknown options are reported by the subcommand's own parser, with its
    # usage line (``fastgrad demo --bogus`` shows the demo's options)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        subparsers.get(args.command, parser).error(
            f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
        return 2
    status: int = importlib.import_module(args._module).run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
