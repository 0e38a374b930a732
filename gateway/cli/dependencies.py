"""What the command line needs installed, and the one line that says what is missing.

Run outside an environment that has the package's dependencies (``python -m gateway`` with
the system's interpreter, or an install made with ``--no-deps``), a command would fail deep
inside, or once per slide; each command's modules are looked up before it starts instead,
and a module that turns up missing later is reported the same way by ``__main__``.
"""

from __future__ import annotations

import importlib.util
import sys

# The top-level module each third-party import of the gateway comes from, and the
# requirements.txt distribution that installs it (tests/cli/test_dependencies.py checks
# both against the code and against requirements.txt).
DISTRIBUTIONS = {
    "PIL": "Pillow",
    "numpy": "numpy",
    "yaml": "PyYAML",
    "orjson": "orjson",
    "pybase64": "pybase64",
    "functions_framework": "functions-framework",
    "flask": "functions-framework",
    "werkzeug": "functions-framework",
    "gunicorn": "gunicorn",
    "google.auth": "google-auth",
    "google.oauth2": "google-auth",
    "google.cloud.firestore": "google-cloud-firestore",
    "google.cloud.firestore_v1": "google-cloud-firestore",
    "google.api_core": "google-cloud-firestore",
    "grpc": "google-cloud-firestore",
}

# What commands import, by what they do (``__main__.COMMANDS`` names one per command):
# read the configuration and JSON; read slides; serve HTTP.
CONFIG = ("yaml", "orjson")
SLIDES = (*CONFIG, "numpy", "PIL")
SERVER = (*SLIDES, "functions_framework", "flask", "werkzeug", "gunicorn")


def _present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package (google, google.cloud) is missing
        return False


def missing(modules: tuple[str, ...]) -> str | None:
    """The first of ``modules`` that cannot be imported here, or None."""
    return next((m for m in modules if not _present(m)), None)


def distribution(module: str) -> str | None:
    """The distribution that installs ``module`` (a dotted name), None for one not ours."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        found = DISTRIBUTIONS.get(".".join(parts[:n]))
        if found is not None:
            return found
    return None


def install_hint(module: str) -> str:
    """One line naming what to install for ``module``, and for which interpreter."""
    dist = distribution(module) or module
    return (
        f"eos-gateway needs {dist}, which {sys.executable} does not have: pip install {dist} "
        "(or install eos-gateway with its dependencies: pip install . in the checkout)"
    )
