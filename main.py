"""Cloud Functions entry point: ``--entry-point=gateway`` / ``--target gateway``.

The function and its start-up live in the package (``gateway/function/entry.py``), so the
installed command's ``eos-gateway serve`` runs the same code; this file is what the
platform loads from the uploaded source.
"""

from gateway.function.entry import gateway

__all__ = ["gateway"]
