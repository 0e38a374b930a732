"""The Cloud Function: its entry point (``entry``) and the source file functions-framework
loads for ``eos-gateway serve`` (``main``), so an installed package serves without the
checkout's ``main.py``."""
