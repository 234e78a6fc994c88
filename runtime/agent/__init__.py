"""The core2 agent: one per model-server replica (see runtime/agent/README.md)."""
