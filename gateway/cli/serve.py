"""``eos-gateway serve``: the gateway on this machine, as Cloud Functions run it.

functions-framework (gunicorn inside) serves the package's own entry point
(``gateway/function/main.py``), so an installed package serves from any folder without
the checkout's ``main.py``; the README's first command does the same from a checkout.
It listens on this machine only (127.0.0.1) unless ``--host`` says otherwise: without an
``auth`` section every model route is open to whoever can reach it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import gateway.function

SOURCE = Path(gateway.function.__file__).with_name("main.py")


def command(host: str, port: int) -> list[str]:
    """functions-framework's command line for the package's entry point."""
    return [
        sys.executable,
        "-m",
        "functions_framework",
        "--target=gateway",
        f"--source={SOURCE}",
        f"--host={host}",
        f"--port={port}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="eos-gateway serve",
        description="Run the gateway here under functions-framework, as the Cloud Function "
        "runs (the demo page at /, the API under /v1/ and /v2/).",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT") or 8080),
        help="port (default $PORT, else 8080)",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="the configuration file (default: $GATEWAY_CONFIG, else the embedded defaults)",
    )
    args = parser.parse_args(argv)
    if args.config is not None:
        config = Path(args.config)
        if not config.is_file():
            parser.error(f"--config {args.config}: no such file")
        os.environ["GATEWAY_CONFIG"] = str(config.resolve())
    argv = command(args.host, args.port)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # functions-framework becomes this process: signals reach it
    return 0  # not reached
