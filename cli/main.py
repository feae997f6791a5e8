"""The `kbrec` command line: one entry point, a subcommand per job.

Each subcommand lives in `cli.commands.<name>` with a `register(subparsers)`
function. Handlers import their heavy dependencies (TensorFlow, ONNX Runtime)
lazily so that `kbrec --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from cli.logs import configure_logging
from kbrec.errors import CommandError

# Order here is the order in `kbrec --help`.
COMMAND_MODULES: tuple[str, ...] = (
    "corpus",
    "train",
    "evaluate",
    "convert",
    "store",
    "accounts",
    "keys",
    "serve",
    "triton",
    "loadtest",
    "experiment",
    "threshold",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kbrec", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"cli.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except CommandError as exc:
        print(f"kbrec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kbrec {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
