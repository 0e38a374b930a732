"""Reference functions for the benchmarks, served by ``functions-framework`` like the gateway.

``read_body`` reads the whole request body and answers a few bytes: what any function
receiving a slide pays for the transport.  ``hello`` is the cold-start reference.
"""

import functions_framework


@functions_framework.http
def read_body(request):
    data = request.get_data()
    return {"bytes": len(data)}


@functions_framework.http
def hello(request):
    return "hello"


@functions_framework.http
def hello_heavy(request):
    """The hello-world plus the libraries a :predict answer cannot do without."""
    import numpy  # noqa: F401
    import orjson  # noqa: F401
    import PIL.Image  # noqa: F401
    import pybase64  # noqa: F401

    return "hello"
