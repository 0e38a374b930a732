"""The entry point ``gateway``: imported by the repository's ``main.py`` (what Cloud
Functions deploys) and by ``gateway/function/main.py`` (what ``eos-gateway serve`` gives
functions-framework), so both start the gateway the same way.

Importing it starts the gateway: functions-framework imports its source file inside the
app's context, before the server listens, so a configuration error stops the start.
"""

import gc

import functions_framework
from werkzeug.exceptions import HTTPException

from gateway.pipeline import jpegcut
from gateway.rest.app import framework_error, handle
from gateway.rest.static_route import close_static_route
from gateway.runtime import start
from gateway.serving import configure_gunicorn, limit_heap_growth

configure_gunicorn()  # graceful SIGTERM within the platform's 10 s; see gateway/serving.py
limit_heap_growth()  # idle memory back to its level after large slides
close_static_route()  # /static/ would serve gateway/static/ (the demo page)
start()  # the configuration read and checked now: an error stops the start
jpegcut.available()  # logs once, at start, how JPEG slides are tiled here
# What start-up made (modules, the configuration, the services) lives as long as the
# process: kept out of the collector's full passes, the first of which otherwise fell on
# an instance's first request, and shared page for page by the workers forked from here.
gc.freeze()


@functions_framework.errorhandler(HTTPException)
def _framework_error(exc):
    return framework_error(exc)


@functions_framework.http
def gateway(request):
    return handle(request)
