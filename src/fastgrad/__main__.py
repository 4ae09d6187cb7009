"""The ``fastgrad`` command: ``fastgrad demo`` and ``fastgrad bench``.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; it is imported only when chosen, so ``fastgrad --help``
needs none of the optional extras.
"""
import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS = {
    "demo": ("fastgrad.demo", "train micrograd's two-moons demo and plot it"),
    "bench": ("fastgrad.bench", "time fastgrad against pure-Python engines"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="fastgrad",
        description="fastgrad: a compiled scalar autodiff engine (drop-in for micrograd).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        try:
            importlib.import_module(module).add_arguments(p)
        except ImportError:
            pass   # reported when the command runs
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return importlib.import_module(args._module).run(args)


if __name__ == "__main__":
    sys.exit(main())
