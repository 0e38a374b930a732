"""HTTP transport: routing, error JSON and the access log; the work is in ``gateway.handlers``."""
