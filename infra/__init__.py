"""The core2 Pulumi program (entry point: infra/__main__.py)."""
