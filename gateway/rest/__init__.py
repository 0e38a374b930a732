"""HTTP transport: routing and JSON responses only; the work is in ``gateway.handlers``."""
