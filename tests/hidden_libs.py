"""Processes that run as if a system library were not installed.

The library's files are covered by an empty file inside a private mount namespace
(``unshare -m``, which needs root, as the tests and CI have here); nothing outside the
process changes.  The fast-path tests and benchmarks use it to see the gateway as a
machine without Debian's ``libturbojpeg0`` sees it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess


def library_files(soname: str) -> list[str]:
    """The files the dynamic loader would open for ``soname`` (its cache, links resolved)."""
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"  # not on every PATH
    out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, check=True).stdout
    files = []
    for line in out.splitlines():
        name, _, path = line.strip().partition(" => ")
        if name.split(" ")[0] == soname and path:
            real = os.path.realpath(path)
            if real not in files:
                files.append(real)
    return files


def without_files(argv: list[str], files: list[str]) -> list[str]:
    """``argv`` run where each of ``files`` reads as empty (so no library loads from it)."""
    if not files:
        return list(argv)
    mounts = " && ".join(f"mount --bind /dev/null {shlex.quote(f)}" for f in files)
    script = f'{mounts} && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv]


def without_library(argv: list[str], soname: str) -> list[str]:
    """``argv`` run where the system's ``soname`` cannot be loaded (unchanged if absent)."""
    return without_files(argv, library_files(soname))
