"""Gateway in front of TF Serving models, starting with an eosinophil detector.

The package is split by concern and layered (README, "Layout"): ``rest`` (routing only),
``handlers`` (one per route family), ``usecases`` (one per kind of service), ``codecs``
(inbound wire formats), ``pipeline`` (decode, tile, merge), ``backends`` (where payloads
are sent), ``auth`` and ``usage``.  ``function`` is the Cloud Function: the entry point
``gateway``, which checks the configuration at start-up and forwards each request to
:func:`gateway.rest.app.handle`; ``main.py`` at the repository root, what Cloud Functions
load, imports it, and ``eos-gateway serve`` (``__main__``) runs it locally.
"""

__version__ = "0.1.0"
