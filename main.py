"""Cloud Functions entry point: ``--entry-point=gateway`` / ``--target gateway``."""

import functions_framework

from gateway.rest.app import handle
from gateway.serving import configure_gunicorn

configure_gunicorn()  # graceful SIGTERM within the platform's 10 s; see gateway/serving.py


@functions_framework.http
def gateway(request):
    return handle(request)
