"""The source file ``eos-gateway serve`` hands functions-framework (``--source``): the
installed package's counterpart of the repository's ``main.py``, in a folder of its own
because functions-framework puts the source's folder on ``sys.path``."""

from gateway.function.entry import gateway

__all__ = ["gateway"]
