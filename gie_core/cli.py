"""The `instructgie` command. Each subcommand lives in ``gie_core/_cli/<name>.py`` and defines
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``; heavy imports stay inside
``run`` so that ``--help`` is instant."""
from __future__ import annotations

import argparse
import importlib
import sys

from gie_core import __version__

SUBCOMMANDS = ("edit", "unify", "mask", "demo")


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="instructgie",
        description="InstructGIE: edit a query image the way example pairs (before -> after) show.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        try:
            mod = importlib.import_module(f"gie_core._cli.{name}")
        except ModuleNotFoundError as e:  # a subcommand not built yet in this checkout
            if e.name != f"gie_core._cli.{name}":
                raise
            continue
        p = sub.add_parser(name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from gie_core.runtime import prefer_numba_workqueue, quiet_library_notes

    quiet_library_notes()
    prefer_numba_workqueue()
    try:
        return int(args._run(args) or 0)
    except CLIError as e:
        print(f"instructgie {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"instructgie {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Under `python -m gie_core.cli` this module is __main__, a second copy whose CLIError is not
    # the one subcommands raise: dispatch through the importable module instead.
    from gie_core.cli import main as _main

    sys.exit(_main())
