"""The ``af2`` command line: one module per command group in this package, each thin over the library.

A command module exposes ``register(subparsers)``; the parser it adds sets ``func`` to a callable
taking the parsed ``argparse.Namespace`` and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from af2 import __version__
from af2.errors import AF2Error

# One line per command group; each module's register() adds its sub-commands, in this order in --help.
_COMMAND_MODULES = (
    "af2.cli.parity",
    "af2.cli.convert",
    "af2.cli.ask",
    "af2.cli.data",
    "af2.cli.eval",
    "af2.cli.train",
    "af2.serve.cli",  # stays beside the server for now; af2.cli.serve once the server work has merged
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="af2", description="Audio Flamingo 2: ask questions about audio.")
    parser.add_argument("--version", action="version", version=f"af2 {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record is logged, not as it was when the handler was
    made (tests and programs that call ``main`` swap and close stderr captures)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = logging.getLogger("af2")  # the library's notes (e.g. which base LM was chosen), on stderr
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("af2: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    try:
        return int(args.func(args) or 0)
    except AF2Error as exc:  # anything else is a bug and keeps its traceback
        message = " ".join(str(exc).split())  # one line, whatever the message holds
        print(f"af2 {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"af2 {args.command}: interrupted", file=sys.stderr)
        return 130

