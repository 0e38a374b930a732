"""``python -m gateway <command>``: command-line tools.

Each command lives in its own module, imported only when chosen, and gets the remaining
arguments: ``usage`` (gateway.usage.report), ``replay-usage`` (gateway.usage.replay),
``compare`` (gateway.usage.comparison) and ``detect`` (gateway.cli.detect).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("usage", add_help=False, help="usage per principal, service and day")
    commands.add_parser(
        "replay-usage", add_help=False, help="store usage records found in log lines"
    )
    commands.add_parser("detect", add_help=False, help="detect cells in image files")
    commands.add_parser(
        "compare", add_help=False, help="how two variants of a service's model agree"
    )
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.command == "usage":
        from gateway.usage import report as m
    elif args.command == "replay-usage":
        from gateway.usage import replay as m
    elif args.command == "compare":
        from gateway.usage import comparison as m
    else:
        from gateway.cli import detect as m
    return m.main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
