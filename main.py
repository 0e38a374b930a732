"""Cloud Functions entry point: ``--entry-point=gateway`` / ``--target gateway``."""

import functions_framework

from gateway.rest.app import handle


@functions_framework.http
def gateway(request):
    return handle(request)
