"""Command-line tools: ``python -m gateway detect ...`` (see docs/cli.md)."""
