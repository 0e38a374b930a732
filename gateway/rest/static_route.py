"""No page leaves the gateway except through its routes.

functions-framework names its Flask app after the target, ``gateway``, which is also this
package: Flask then serves ``gateway/static/`` at ``/static/``, so the demo page was
reachable at ``/static/demo.html`` with ``demo: false`` and without its security headers.
Its view is replaced by a 404 (answered as the gateway's JSON error): the demo page is
served by the ``/`` route alone.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, has_app_context
from werkzeug.exceptions import NotFound


def _no_static_files(filename: str = "") -> Any:
    raise NotFound()


def close_static_route() -> None:
    """Called by ``gateway.function.entry``, which functions-framework imports (through
    ``main.py``) in its app's context."""
    if not has_app_context():  # imported by something else: no app to close
        return
    if "static" in current_app.view_functions:
        current_app.view_functions["static"] = _no_static_files
