"""Gateway in front of an eosinophil-detection model served by TF Serving.

The package is split by concern: ``codecs`` (wire formats), ``pipeline`` (decode, tile,
merge), ``backends`` (where tiles are sent), ``auth``, ``usage``, ``handlers`` (one per
route) and ``rest`` (routing only).  ``main.py`` at the repository root is the Cloud
Functions entry point and only forwards to :func:`gateway.rest.app.handle`.
"""

__version__ = "0.1.0"
