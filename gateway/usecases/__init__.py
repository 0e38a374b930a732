"""One transport-free use case per kind of service: check the images once, run, return.

The HTTP handlers and the CLI only adapt requests to these functions and their typed
results to answers; nothing here knows about Flask, routes or JSON.
"""
