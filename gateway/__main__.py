"""``eos-gateway <command>`` (the installed console command; ``python -m gateway`` is the
same): the command-line tools.

Each command lives in its own module, imported only when chosen, and gets the remaining
arguments; ``COMMANDS`` lists them, one line each.  A dependency missing from this
interpreter is said in one line naming what to install, before the command starts.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gateway.cli.dependencies import CONFIG, SERVER, SLIDES, distribution, install_hint, missing

PROG = "eos-gateway"

# command: (module with main(argv) -> int, what it does, the modules it needs installed)
COMMANDS = {
    "detect": ("gateway.cli.detect", "count cells on slide photographs, here or --url", SLIDES),
    "usage": ("gateway.usage.report", "usage per principal, service and day", CONFIG),
    "replay-usage": ("gateway.usage.replay", "store usage records found in log lines", CONFIG),
    "serve": ("gateway.cli.serve", "run the gateway locally (functions-framework)", SERVER),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="The eosinophil gateway's tools. `eos-gateway COMMAND --help` for one.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, summary, _) in COMMANDS.items():
        commands.add_parser(name, add_help=False, help=summary)
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    module_name, _, needs = COMMANDS[args.command]
    absent = missing(needs)
    if absent is not None:
        print(install_hint(absent), file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(module_name)
        return module.main(rest)
    except ModuleNotFoundError as exc:  # one a command imports only for some settings
        if exc.name is None or distribution(exc.name) is None:
            raise
        print(install_hint(exc.name), file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
